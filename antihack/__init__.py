"""antihack: a self-hosted, asynchronous face-liveness anti-hack service.

The installed package maps the repository's folders under one name, so that nothing of ours
collides with a user's own ``api`` or ``models`` package:

- ``antihack.api`` (``api/``): the Flask front.
- ``antihack.worker`` (``worker/``): the Celery workers and the detection pipeline.
- ``antihack.shared`` (``shared/``): what both import: ``domain`` (jobs, keys, quota, webhooks,
  capture sessions), ``infra`` (database, settings, logs, metrics, broker), ``cli`` (the
  ``antihack`` command) and ``sdk`` (the Python client and the capture and attack kit).
- ``antihack.models`` (``models/``): the ONNX weights, their manifest and converter.
- ``antihack.migrations`` (``migrations/``): the Alembic environment.

In a checkout, ``antihack/`` holds links to those folders; the wheel holds copies.
"""
