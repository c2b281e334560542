"""Cross-request replay: the same session id, or frames a key already submitted."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from worker.pipeline.fusion import CERTAIN, WEAK, Signal

HASH_MASK = (1 << 64) - 1
# Hamming distance (of 64 bits) at or below which two pictures count as the same. Measured on
# astronaut(): JPEG re-encoding (q50-95), noise or darkening 0 bits, a 2% rescale or 3 px shift
# 2, a 12 px shift 4, a 5% rescale or 2 degree turn 8, an unrelated photo 32-36. pHash is that
# tolerant, so stay tight: a false match flags a genuine user's retry as a certain hack.
DEFAULT_MAX_DISTANCE = 2

# Bits set in each byte value, for popcount over uint64 arrays without numpy 2's bitwise_count.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def phash(image: NDArray[np.uint8]) -> int:
    """64-bit DCT perceptual hash of an RGB (or gray) image, as an unsigned int."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    # The median over the 63 AC terms: the DC term only says how bright the image is.
    median = float(np.median(low.flatten()[1:]))
    bits = (low.flatten() > median).astype(np.uint8)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits; accepts hashes stored signed or unsigned."""
    return ((a ^ b) & HASH_MASK).bit_count()


def min_distances(frame_hashes: Sequence[int], seen_hashes: Sequence[int]) -> list[int]:
    """For each frame hash, the distance to the nearest seen hash (64 when none are seen)."""
    if not seen_hashes:
        return [64] * len(frame_hashes)
    seen = np.array([h & HASH_MASK for h in seen_hashes], dtype=np.uint64)
    result = []
    for value in frame_hashes:
        xor = np.bitwise_xor(seen, np.uint64(value & HASH_MASK))
        counts = _POPCOUNT[xor.view(np.uint8)].reshape(-1, 8).sum(axis=1)
        result.append(int(counts.min()))
    return result


def replay_signals(
    session_id: str,
    frame_hashes: Sequence[int],
    seen_session_ids: Collection[str],
    seen_hashes: Sequence[int],
    max_distance: int = DEFAULT_MAX_DISTANCE,
) -> list[Signal]:
    """Certain replay when the session id, or at least half of the frames, were already
    submitted by this key; a weak signal when fewer frames match.

    A replayed capture brings its frames back (re-encoded or not: 0 bits apart), so most of
    them match. A genuine retry by a person sitting still in the same place can match a frame
    or two of their previous attempt by chance (a 3 px shift is 2 bits); that alone must not
    be a certain hack.
    """
    signals: list[Signal] = []
    if session_id and session_id in seen_session_ids:
        signals.append(Signal("session_replayed", CERTAIN, "this session id was already submitted"))
    distances = min_distances(frame_hashes, seen_hashes)
    matched = [i for i, d in enumerate(distances) if d <= max_distance]
    if matched:
        detail = (
            f"{len(matched)} of {len(distances)} frames match earlier frames "
            f"(nearest distance {min(distances)} bits)"
        )
        if 2 * len(matched) >= len(distances):
            signals.append(Signal("frames_replayed", CERTAIN, detail))
        else:
            signals.append(Signal("frames_similar", WEAK, detail))
    return signals
