"""Code the API, the worker and the CLI share: domain, infra, cli and sdk (see their docstrings)."""

import os

# Defence in depth behind shared/domain/capture.py's header checks: OpenCV refuses to decode an
# image of
# more pixels than this (instead of its default, 2**30: ~3 GB for one frame). OpenCV reads the
# variable once, when cv2 is first imported, and every module of ours imports this package
# first. 8192 x 8192 is the largest frame a capture may declare (CaptureLimits.max_side); an
# operator's own value wins.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(8192 * 8192))
# onnxruntime's official builds (1.29 and later) send usage telemetry to Microsoft from Linux too
# (a worker was seen asking DNS for mobile.events.data.microsoft.com); it reads this variable
# before its first session. A self-hosted service sends nothing anywhere on its own; an
# operator's own value wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
