"""What a client of antihack uses: the Python client (``client``), the concurrent submitter
behind ``antihack submit`` (``submit``), capture files made from images (``sample``) and the
attack kit that evaluates a deployment (``attacks``)."""
