"""How the signals become the hack ``score`` (>= 0.98 means hack, the seed's threshold).

Every check yields signals with a reason code and a severity; the score is decided in order:

1. **Certain** signals (bad or missing signature when required, impossible timestamps, a
   replayed session or frames, a still image fed as video (exact copies, one photo
   re-noised / moved / re-encoded per frame, or two or three photos cycled: motion.py), a
   requested challenge not performed, too few frames for the challenge, a failed
   capture-session check ``session_*``) prove the capture was not produced live by a
   conformant SDK: score = 0.995 + 0.001 per further certain signal (at most 0.999), always
   >= 0.99.
2. **Strong** signals (emulator, virtual camera, timestamps in the future or older than a day,
   two identical frames, ``frames_out_of_order`` far from the timestamp order (motion.py;
   slightly out of order is weak), ``pad_below_operator_threshold``: live_proba below the operator's
   calibrated ``ANTIHACK_PAD_HACK_BELOW``, off by default) are hacks by the seed's threshold
   but not proof: score = 0.985 + 0.002 per further strong signal, in [0.985, 0.989].
3. Otherwise the score is continuous and stays below 0.98, so only the checks above declare a
   hack. Evidence e = 0.6 (1 - live_proba) + 0.15 mask_proba x quality_score +
   0.25 (1 - quality_score), plus 0.1 per weak signal (rooted device, flat timestamps,
   repeated frames, frames slightly out of order, a few frames similar to this key's
   earlier ones), capped at 1;
   score = 0.97 e. The PAD model's live probability moves the score continuously and is never
   presented as proof: it is uncalibrated (a flat grey image scores above real faces), so even
   live_proba = 0 alone gives 0.58. Blur inflates the mask model's output, hence the quality
   factor on mask_proba.
4. **No face** in any frame: score = 0.9 (unless a certain or strong signal applies). Nothing
   can be judged, so it is not declared a hack (< 0.98), but it is far from a pass: integrators
   that read the score as risk should ask for a new capture, as ``has_no_face`` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from antihack.shared.domain.scoring import HACK_THRESHOLD as HACK_THRESHOLD  # re-exported

Severity = Literal["certain", "strong", "weak"]
CERTAIN: Severity = "certain"
STRONG: Severity = "strong"
WEAK: Severity = "weak"

CERTAIN_BASE, CERTAIN_STEP, CERTAIN_MAX = 0.995, 0.001, 0.999
STRONG_BASE, STRONG_STEP, STRONG_MAX = 0.985, 0.002, 0.989
CONTINUOUS_MAX = 0.97  # the continuous part never reaches HACK_THRESHOLD
W_PAD, W_MASK, W_QUALITY = 0.6, 0.15, 0.25
WEAK_STEP = 0.1
NO_FACE_SCORE = 0.9


@dataclass(frozen=True)
class Signal:
    """One finding: a stable reason code (kept with the job for audit) and its weight."""

    code: str
    severity: Severity
    detail: str = ""


@dataclass(frozen=True)
class FusionInput:
    """What the fusion reads besides the signals; probabilities are in [0, 1]."""

    has_face: bool
    live_proba: float
    mask_proba: float
    quality_score: float


def _clip(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return float(min(high, max(low, value)))


def continuous_score(inputs: FusionInput, weak_count: int = 0) -> float:
    """The score of a capture without certain or strong signals; always < HACK_THRESHOLD."""
    if not inputs.has_face:
        return NO_FACE_SCORE
    quality = _clip(inputs.quality_score)
    evidence = (
        W_PAD * (1.0 - _clip(inputs.live_proba))
        + W_MASK * _clip(inputs.mask_proba) * quality
        + W_QUALITY * (1.0 - quality)
    )
    return CONTINUOUS_MAX * _clip(evidence + WEAK_STEP * weak_count)


def fuse(signals: Sequence[Signal], inputs: FusionInput) -> float:
    """Combine signals and model outputs into the hack score in [0, 1]."""
    certain = sum(1 for s in signals if s.severity == CERTAIN)
    strong = sum(1 for s in signals if s.severity == STRONG)
    weak = sum(1 for s in signals if s.severity == WEAK)
    if certain:
        return min(CERTAIN_MAX, CERTAIN_BASE + CERTAIN_STEP * (certain - 1))
    if strong:
        return min(STRONG_MAX, STRONG_BASE + STRONG_STEP * (strong - 1))
    return continuous_score(inputs, weak)
