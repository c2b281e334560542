"""Cross-request replay: the same session id, or a capture whose frames were already submitted.

Fingerprint of a frame (``frame_print``): the face is warped by a similarity transform that puts
the FaceMesh eye centres, nose tip and mouth centre at fixed places of a 32x32 gray crop, which
is then contrast-normalised (zero mean, unit variance). Rotation, scale, crops that leave the
inner face, brightness/contrast and colour shifts therefore change it little. From the crop:
- ``hash``: a 64-bit DCT perceptual hash (the 64 lowest-frequency AC terms against their
  median), compared by Hamming distance and indexed in four 16-bit bands;
- ``mirror``: the same hash of the crop flipped left-right. A mirrored replay's crop is the
  mirror of the original's (FaceMesh names the eyes by the face, not by the image side), so a
  capture is compared both ways; only ``hash`` is stored;
- ``descriptor``: the crop at 16x16, 256 signed bytes, an exact-ish comparison of content;
- where the face is (centre, inter-ocular distance, eye-line roll): measured by registering
  each frame's face onto the capture's middle frame (``registered_motion``: one crop window
  for the whole capture, ECC), ~5x more precise than the frame's own FaceMesh points.

The rule (``compare`` / ``replay_signals``): a replay brings back the SAME frames, so almost
every frame has a stored frame of one earlier capture at a small Hamming distance, in the same
order, and either the aligned crops agree exactly (a capture sent again) or the faces' places
keep ONE rigid relation (rotation, scale, shift, mirror) frame by frame: a replay carries the
recording's own sway, even a still-sitting person's. A genuine retry of the same person shows
the same face, so its hashes are near, but its sway is its own. See ``DEFAULT_RULE`` for the
thresholds and ``bench/replay_goal.py`` for the measurements behind them.

History: ``PipelineContext.history`` is any object with ``lookup(prints) -> list of
StoredCapture`` (the ``ReplayHistory`` protocol). ``MemoryHistory`` keeps captures in memory
(``antihack eval --with-history``, tests): after each analysis,
``history.add(capture_id, key_id, analysis.frame_prints)``; for the next capture pass
``history.scoped(None)`` (deployment scope) or ``history.scoped(key_id)`` in its context.
The worker's database implementation (a banded-hash index) is
``antihack.worker.replay_index.DbHistory``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.worker.pipeline.fusion import CERTAIN, WEAK, Signal

HASH_MASK = (1 << 64) - 1
HASH_BITS = 64
# Four 16-bit bands: two hashes within 3 bits share one band exactly (pigeonhole); further
# apart, a replay is still found when any ONE of its frames shares any band with the original.
BANDS = 4
BAND_BITS = HASH_BITS // BANDS
CROP = 32
DESCRIPTOR = 16
DESCRIPTOR_SCALE = 48.0
# Side of the canonical crop in which frames are registered (registered_motion): the
# inter-ocular distance spans 24 px of it. 48 px and 30 ECC steps: 0.4 ms a frame.
REGISTER = 48
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-4)
# Canonical positions in the crop (fractions of its side): eye centres, nose tip, mouth centre;
# symmetric about the vertical mid-line, so that the mirror of a crop is the crop of the mirror.
CANONICAL = np.array([[0.25, 0.32], [0.75, 0.32], [0.5, 0.62], [0.5, 0.85]], dtype=np.float64)
# FaceMesh indices: eye corners (image-left eye 33/133, image-right 362/263), nose tip 1,
# mouth corners 61/291.
_EYE_A, _EYE_B, _NOSE, _MOUTH = (33, 133), (362, 263), 1, (61, 291)

# Bits set in each byte value, for popcount over uint64 arrays without numpy 2's bitwise_count.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class FramePrint:
    """The fingerprint of one frame's face (see the module docstring)."""

    index: int
    hash: int
    mirror: int
    descriptor: bytes
    # Where the face is: the mean of the 468 FaceMesh points, and the inter-ocular distance.
    x: float = 0.0
    y: float = 0.0
    iod: float = 1.0
    # The eye line's angle (radians, image-left eye to image-right eye).
    roll: float = 0.0
    # True when x, y, iod and roll come from registering the frame's face onto the capture's
    # middle frame (``capture_prints``: noise ~0.002 inter-ocular distances), False when they
    # are the FaceMesh points of the frame alone (noise ~0.005-0.012; fingerprints stored
    # before version 2). The rule's motion thresholds depend on it.
    registered: bool = False


@dataclass(frozen=True)
class StoredCapture:
    """An earlier capture's fingerprints, in frame order, as the history returns them."""

    capture_id: str
    key_id: str
    prints: tuple[FramePrint, ...]


class ReplayHistory(Protocol):
    """Where earlier captures' fingerprints are looked up."""

    def lookup(self, prints: Sequence[FramePrint]) -> list[StoredCapture]:
        """Earlier captures that may contain these frames (candidates; compare() decides)."""
        ...


@dataclass
class MemoryHistory:
    """History kept in memory, scanned whole: for ``antihack eval --with-history`` and tests.

    ``key_id`` set: only captures of that key are returned (scope ``key``); None: all
    (scope ``deployment``). ``exclude`` is a capture id never returned (the one being judged).
    """

    captures: list[StoredCapture] = field(default_factory=list)
    key_id: str | None = None
    exclude: str | None = None

    def add(self, capture_id: str, key_id: str, prints: Iterable[FramePrint]) -> None:
        """Remember a capture after it was analysed."""
        self.captures.append(StoredCapture(capture_id, key_id, tuple(prints)))

    def scoped(self, key_id: str | None, exclude: str | None = None) -> MemoryHistory:
        """The same captures seen from one key (or the deployment), without ``exclude``."""
        return MemoryHistory(self.captures, key_id, exclude)

    def lookup(self, prints: Sequence[FramePrint]) -> list[StoredCapture]:
        return [
            c
            for c in self.captures
            if (self.key_id is None or c.key_id == self.key_id) and c.capture_id != self.exclude
        ]


class NoHistory:
    """A key (or deployment) that has submitted nothing yet."""

    def lookup(self, prints: Sequence[FramePrint]) -> list[StoredCapture]:
        return []


# --- fingerprints ------------------------------------------------------------------------------


def _similarity(src: NDArray[np.float64], dst: NDArray[np.float64]) -> NDArray[np.float64]:
    """Least-squares similarity transform (2x3) taking ``src`` points onto ``dst`` (Umeyama)."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    # z = a + ib maps s -> d: a = sum(s.d) / |s|^2, b = sum(s x d) / |s|^2
    norm = float((s**2).sum()) or 1.0
    a = float((s * d).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (dst_mean - rot @ src_mean)[:, None]])


def anchor_points(points: NDArray[np.float32]) -> NDArray[np.float64]:
    """Eye centres, nose tip and mouth centre (4, 2) from 468 FaceMesh points."""
    xy = np.asarray(points[:, :2], dtype=np.float64)
    return np.array(
        [
            xy[list(_EYE_A)].mean(axis=0),
            xy[list(_EYE_B)].mean(axis=0),
            xy[_NOSE],
            xy[list(_MOUTH)].mean(axis=0),
        ]
    )


def aligned_face(frame: NDArray[np.uint8], points: NDArray[np.float32]) -> NDArray[np.float32]:
    """The face warped to the canonical 32x32 gray crop, zero mean and unit variance."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    anchors = anchor_points(points)
    # Warp at 4x and shrink by area: resampling at the crop's own size aliases.
    big = CROP * 4
    matrix = _similarity(anchors, CANONICAL * big)
    warped = cv2.warpAffine(
        gray, matrix, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    crop = cv2.resize(warped, (CROP, CROP), interpolation=cv2.INTER_AREA).astype(np.float32)
    crop -= float(crop.mean())
    return np.asarray(crop / max(float(crop.std()), 1e-3), dtype=np.float32)


# The 64 lowest-frequency AC terms of the 32x32 DCT, by increasing u + v (zig-zag order).
_LOW = sorted(
    ((u, v) for u in range(12) for v in range(12) if u + v > 0), key=lambda t: (sum(t), t)
)
_LOW_U = np.array([t[0] for t in _LOW[:HASH_BITS]])
_LOW_V = np.array([t[1] for t in _LOW[:HASH_BITS]])


def crop_hash(crop: NDArray[np.float32]) -> int:
    """64-bit perceptual hash of a normalised crop: low-frequency DCT terms above their median."""
    terms = cv2.dct(crop)[_LOW_U, _LOW_V]
    bits = (terms > float(np.median(terms))).astype(np.uint8)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def descriptor(crop: NDArray[np.float32]) -> bytes:
    """The crop at 16x16 as 256 signed bytes (1/48 of a standard deviation per step)."""
    small = cv2.resize(crop, (DESCRIPTOR, DESCRIPTOR), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(small * DESCRIPTOR_SCALE), -127, 127).astype(np.int8).tobytes()


def frame_print(index: int, frame: NDArray[np.uint8], points: NDArray[np.float32]) -> FramePrint:
    """The fingerprint of one frame from its FaceMesh points."""
    crop = aligned_face(frame, points)
    flipped = np.ascontiguousarray(crop[:, ::-1])
    anchors = anchor_points(points)
    x, y = (float(v) for v in np.asarray(points[:, :2], dtype=np.float64).mean(axis=0))
    eyes = anchors[1] - anchors[0]
    iod = float(np.linalg.norm(eyes)) or 1.0
    roll = float(np.arctan2(eyes[1], eyes[0]))
    return FramePrint(index, crop_hash(crop), crop_hash(flipped), descriptor(crop), x, y, iod, roll)


def _gray(frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return np.asarray(gray, dtype=np.uint8)


def _apply(matrix: NDArray[np.float64], points: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(points @ matrix[:, :2].T + matrix[:, 2], dtype=np.float64)


def registered_motion(
    frames: Sequence[NDArray[np.uint8]], points: Sequence[NDArray[np.float32]]
) -> list[NDArray[np.float64]] | None:
    """Each frame's eye centres, nose tip and mouth centre (4, 2) in image pixels, measured by
    registering its face onto the middle frame's rather than by its own FaceMesh points.

    Every frame is cut with ONE similarity (the capture's mean FaceMesh anchors to a
    REGISTER-px canonical crop), so the face moves inside the crop as it moved in the image;
    ECC (a rigid transform: rotation and shift, started from the FaceMesh estimate) then finds
    where the middle frame's face lies in each frame. Its precision (~0.002 inter-ocular
    distances on re-encoded frames) is what lets the rule recognise the sway of a person
    sitting very still (~0.007), which FaceMesh's own jitter hides. None when the frames differ
    in size (one crop window cannot serve them)."""
    if len(frames) < 2 or len({f.shape[:2] for f in frames}) != 1:
        return None
    anchors = [anchor_points(p) for p in points]
    to_crop = _similarity(np.mean(anchors, axis=0), CANONICAL * REGISTER)
    to_image = cv2.invertAffineTransform(to_crop).astype(np.float64)
    crops = [
        cv2.warpAffine(
            _gray(f),
            to_crop,
            (REGISTER, REGISTER),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).astype(np.float32)
        for f in frames
    ]
    middle = len(frames) // 2
    face = _apply(to_crop, anchors[middle])
    out = []
    for crop, anchor in zip(crops, anchors, strict=True):
        # Start from the FaceMesh estimate (rotation and shift only: ECC's rigid model).
        start = _similarity(face, _apply(to_crop, anchor))
        start[:, :2] /= math.sqrt(abs(float(np.linalg.det(start[:, :2])))) or 1.0
        warp = start
        try:
            _, found = cv2.findTransformECC(
                crops[middle],
                crop,
                start.astype(np.float32),
                cv2.MOTION_EUCLIDEAN,
                _ECC_CRITERIA,
                None,  # (and OpenCV's default 5x5 Gaussian smoothing of both crops)
            )
            warp = np.asarray(found, dtype=np.float64)
        except cv2.error:  # no convergence (a blank or saturated crop): the FaceMesh estimate
            pass
        out.append(_apply(to_image, _apply(warp, face)))
    return out


def _place(
    points: NDArray[np.float64],
) -> tuple[float, float, float, float]:
    """Centre, inter-ocular distance and eye-line roll of (eye, eye, nose, mouth) points."""
    x, y = (float(v) for v in points.mean(axis=0))
    eyes = points[1] - points[0]
    return x, y, float(np.linalg.norm(eyes)) or 1.0, float(np.arctan2(eyes[1], eyes[0]))


def _strays(anchors: Sequence[NDArray[np.float64]]) -> list[bool]:
    """Frames whose "face" is a stray detection: more than one inter-ocular distance from the
    capture's median face, or its size off by more than exp(0.4) (as the motion check does)."""
    centres = np.array([a.mean(axis=0) for a in anchors])
    iods = np.array([float(np.linalg.norm(a[1] - a[0])) or 1.0 for a in anchors])
    size = float(np.median(iods))
    far = np.linalg.norm(centres - np.median(centres, axis=0), axis=1) > size
    return list(far | (np.abs(np.log(iods / size)) > 0.4))


def capture_prints(
    frames: Sequence[NDArray[np.uint8]], points: Sequence[NDArray[np.float32] | None]
) -> list[FramePrint]:
    """The fingerprints of a capture's face frames (``points[i]`` None: no face in frame i),
    their placement registered across frames (``registered_motion``) when it can be.

    Frames of different sizes keep their FaceMesh placements (unregistered). Otherwise a frame
    whose face is a stray detection (``_strays``: another object taken for the largest face)
    is left out: it is not the face the other frames show."""
    faces = [(i, p) for i, p in enumerate(points) if p is not None]
    if len({frames[i].shape[:2] for i, _ in faces}) > 1:
        return [frame_print(i, frames[i], p) for i, p in faces]
    if faces:
        stray = _strays([anchor_points(p) for _, p in faces])
        faces = [face for face, away in zip(faces, stray, strict=True) if not away]
    prints = [frame_print(i, frames[i], p) for i, p in faces]
    places = registered_motion([frames[i] for i, _ in faces], [p for _, p in faces])
    if places is None:
        return prints
    out = []
    for fp, place in zip(prints, places, strict=True):
        x, y, iod, roll = _place(place)
        out.append(replace(fp, x=x, y=y, iod=iod, roll=roll, registered=True))
    return out


def phash(image: NDArray[np.uint8]) -> int:
    """64-bit DCT perceptual hash of a whole RGB (or gray) image (no alignment)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small = cv2.resize(gray, (CROP, CROP), interpolation=cv2.INTER_AREA).astype(np.float32)
    return crop_hash(small)


def hamming(a: int, b: int) -> int:
    """Number of differing bits; accepts hashes stored signed or unsigned."""
    return ((a ^ b) & HASH_MASK).bit_count()


def to_signed(value: int) -> int:
    """A 64-bit hash as a signed BIGINT (how the database stores it)."""
    value &= HASH_MASK
    return value - (1 << 64) if value >= 1 << 63 else value


def band_keys(value: int) -> list[int]:
    """The index keys of a hash: band number * 2^16 + the band's 16 bits, one per band."""
    value &= HASH_MASK
    mask = (1 << BAND_BITS) - 1
    return [(b << BAND_BITS) | ((value >> (b * BAND_BITS)) & mask) for b in range(BANDS)]


def distance_matrix(a: Sequence[int], b: Sequence[int]) -> NDArray[np.int64]:
    """Hamming distances (len(a), len(b))."""
    if not a or not b:
        return np.zeros((len(a), len(b)), dtype=np.int64)
    x = np.array([v & HASH_MASK for v in a], dtype=np.uint64)[:, None]
    y = np.array([v & HASH_MASK for v in b], dtype=np.uint64)[None, :]
    xor = np.ascontiguousarray(np.bitwise_xor(x, y))
    counts = _POPCOUNT[xor.view(np.uint8)].reshape(len(a), len(b), 8).sum(axis=2)
    return np.asarray(counts, dtype=np.int64)


def _descriptors(prints: Sequence[FramePrint], mirrored: bool) -> NDArray[np.float32]:
    arr = (
        np.stack(
            [
                np.frombuffer(p.descriptor, dtype=np.int8).reshape(DESCRIPTOR, DESCRIPTOR)
                for p in prints
            ]
        ).astype(np.float32)
        / DESCRIPTOR_SCALE
    )
    return np.ascontiguousarray(arr[:, :, ::-1]) if mirrored else arr


def motion_residual(
    mine: Sequence[FramePrint],
    theirs: Sequence[FramePrint],
    i: NDArray[np.intp],
    j: NDArray[np.intp],
    mirrored: bool,
) -> tuple[float, float]:
    """How far paired frames are from ONE rigid relation: (residual / sway, sway).

    A replay is the earlier recording under one transform (rotation, scale, shift, mirror):
    each of its frames sits where that transform puts the paired earlier frame, so the face's
    position, roll and size per pair differ from the common transform only by measurement
    noise.
    A retry has its own sway, so they differ by the two sways. Residual and sway (the earlier
    capture's own motion over the pairs) are in inter-ocular distances (radians for roll)."""
    cq = np.array([[mine[k].x, mine[k].y] for k in i])
    cs = np.array([[theirs[k].x, theirs[k].y] for k in j])
    iod_q = np.array([mine[k].iod for k in i])
    iod_s = np.array([theirs[k].iod for k in j])
    roll_q = np.array([mine[k].roll for k in i])
    roll_s = np.array([theirs[k].roll for k in j])
    if mirrored:  # x -> -x, and a mirrored eye line turns the other way
        cs, roll_s = cs * np.array([-1.0, 1.0]), -roll_s
    turn = (roll_q - roll_s + np.pi) % (2 * np.pi) - np.pi
    zoom = np.log(iod_q / iod_s)
    theta, log_scale = float(np.median(turn)), float(np.median(zoom))
    scale = float(np.exp(log_scale))
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shift = cq - scale * cs @ rotation.T
    unit = scale * float(np.median(iod_s))
    off = (shift - np.median(shift, axis=0)) / unit
    residual = float(
        np.sqrt(
            (off**2).sum(axis=1).mean()
            + ((turn - theta) ** 2).mean()
            + ((zoom - log_scale) ** 2).mean()
        )
    )
    own = (cs - cs.mean(axis=0)) / float(np.median(iod_s))
    log_iod = np.log(iod_s)
    sway = float(
        np.sqrt(
            (own**2).sum(axis=1).mean()
            + ((roll_s - roll_s.mean()) ** 2).mean()
            + ((log_iod - log_iod.mean()) ** 2).mean()
        )
    )
    return residual / max(sway, 1e-9), sway


# --- the rule -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Thresholds of the replay rule; DEFAULT_RULE's values and margins are measured (see it)."""

    # Same face: a frame whose hash is within max_bits (of 64) of a stored frame's.
    max_bits: int
    # An alignment (frame i <-> stored frame j, same order, reversed, or every other frame)
    # counts when at least this fraction of its pairs are the same face.
    pair_fraction: float
    # Identical frames: the aligned crops of the pairs differ by at most exact_rms (median RMS,
    # in standard deviations of the crop) -- a capture sent again, re-encoded or not.
    exact_rms: float
    # The same recording: over at least min_pairs pairs, and at least min_overlap of the
    # shorter capture's frames, the paired frames keep one rigid relation (motion_residual
    # at most max_motion of the sway), where the earlier capture swayed at least min_sway
    # (below it, measurement noise is all there is to compare: a still picture, judged by the
    # still-image check, not here). For registered placements (both captures; version-2
    # fingerprints); legacy_* for placements from FaceMesh points alone (older fingerprints).
    min_pairs: int
    min_overlap: float
    max_motion: float
    min_sway: float
    # Registered alignments of fewer than full_pairs pairs need motion <= short_motion.
    full_pairs: int
    short_motion: float
    legacy_min_pairs: int
    legacy_min_overlap: float
    legacy_max_motion: float
    legacy_min_sway: float

    def motion_limits(self, registered: bool) -> tuple[int, float, float, float]:
        """(min_pairs, min_overlap, max_motion, min_sway) for registered placements, or for
        FaceMesh-only ones."""
        if registered:
            return self.min_pairs, self.min_overlap, self.max_motion, self.min_sway
        return (
            self.legacy_min_pairs,
            self.legacy_min_overlap,
            self.legacy_max_motion,
            self.legacy_min_sway,
        )


# Measured with `python -m bench.replay_goal --extra` (12 generated genuine captures, half of
# people sitting very still; the kit's replays and the harder edits of each; every
# genuine capture against every other as a retry), registered placements: replays' motion
# residual <= 0.24 of the sway (16 and 12 frames); retries' >= 0.49 (16 frames) and >= 0.40
# (12 frames) over >= 9 pairs covering >= 75% of the frames (over half the frames: 0.34, hence
# min_overlap 0.75; a trimmed replay still overlaps the shorter capture whole); over 6-8 pairs
# (8-frame captures) retries came to 0.29, hence short_motion 0.20 below full_pairs. Replay
# sways >= 0.0066 inter-ocular distances (still-sitting people, 16 frames) against a
# registration noise ~0.0015: min_sway 0.004. The legacy_* values are the FaceMesh-only rule's
# (fingerprints stored before version 2).
DEFAULT_RULE = Rule(
    max_bits=12,
    pair_fraction=0.5,
    exact_rms=0.02,
    min_pairs=5,
    min_overlap=0.75,
    max_motion=0.30,
    min_sway=0.004,
    full_pairs=9,
    short_motion=0.20,
    legacy_min_pairs=5,
    legacy_min_overlap=0.5,
    legacy_max_motion=0.52,
    legacy_min_sway=0.02,
)


@dataclass(frozen=True)
class Comparison:
    """How a capture relates to one earlier capture, in its best alignment."""

    capture_id: str
    key_id: str
    mirrored: bool
    same_face: int  # frames within max_bits of some stored frame
    frames: int
    pairs: int  # frames in the best alignment
    rms: float
    motion: float
    replayed: bool
    sway: float = 0.0  # the earlier capture's own motion over the pairs (inter-ocular distances)
    long_enough: bool = False  # pairs >= min_pairs and >= min_overlap of the shorter capture

    def describe(self) -> str:
        way = "mirrored, " if self.mirrored else ""
        return (
            f"{self.same_face} of {self.frames} frames show the face of an earlier capture "
            f"({way}{self.pairs} aligned, crop RMS {self.rms:.3f}, "
            f"motion residual {self.motion:.2f} of the sway {self.sway:.4f})"
        )


def _alignments(n: int, m: int) -> Iterable[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    """Frame pairings to try: same order at every offset, reversed, every other frame."""
    i_all = np.arange(n)
    j_all = np.arange(m)
    for offset in range(-(n - 1), m):
        for step in (1, -1, 2):
            j = offset + step * i_all
            keep = (j >= 0) & (j < m)
            if keep.sum() >= 2:
                yield i_all[keep], j[keep]
        i = offset + 2 * j_all  # the query has twice the stored frames' rate... or the reverse
        keep = (i >= 0) & (i < n)
        if keep.sum() >= 2:
            yield i[keep], j_all[keep]


def compare(
    prints: Sequence[FramePrint], stored: StoredCapture, mirrored: bool, rule: Rule = DEFAULT_RULE
) -> Comparison:
    """Compare a capture with one earlier capture (its mirror when ``mirrored``)."""
    n, m = len(prints), len(stored.prints)
    nothing = Comparison(stored.capture_id, stored.key_id, mirrored, 0, n, 0, 9.0, 9.0, False)
    if not n or not m:
        return nothing
    dist = distance_matrix(
        [p.mirror if mirrored else p.hash for p in prints], [p.hash for p in stored.prints]
    )
    same_face = int((dist.min(axis=1) <= rule.max_bits).sum())
    if same_face == 0:
        return nothing
    mine, theirs = _descriptors(prints, mirrored), _descriptors(stored.prints, False)
    best = replace(nothing, same_face=same_face)
    registered = all(p.registered for p in prints) and all(p.registered for p in stored.prints)
    min_pairs, min_overlap, max_motion, min_sway = rule.motion_limits(registered)
    long_enough = max(min_pairs, math.ceil(min_overlap * min(n, m)))
    for i, j in _alignments(n, m):
        if (dist[i, j] <= rule.max_bits).mean() < rule.pair_fraction:
            continue
        rms = float(np.median(np.sqrt(((mine[i] - theirs[j]) ** 2).mean(axis=(1, 2)))))
        motion, sway = motion_residual(prints, stored.prints, i, j, mirrored)
        # Fewer pairs leave a retry's smooth sway more room to match by chance: stricter.
        limit = max_motion if not registered or len(i) >= rule.full_pairs else rule.short_motion
        same_recording = len(i) >= long_enough and sway >= min_sway and motion <= limit
        replayed = rms <= rule.exact_rms or same_recording
        candidate = replace(
            best,
            pairs=len(i),
            rms=rms,
            motion=motion,
            replayed=replayed,
            sway=sway,
            long_enough=len(i) >= long_enough,
        )
        rank = (replayed, candidate.long_enough, -motion, -rms)
        if best.pairs == 0 or rank > (best.replayed, best.long_enough, -best.motion, -best.rms):
            best = candidate
    return best


def best_comparison(
    prints: Sequence[FramePrint], candidates: Iterable[StoredCapture], rule: Rule = DEFAULT_RULE
) -> Comparison | None:
    """The earlier capture (and orientation) most like this one, or None."""
    best: Comparison | None = None
    for stored in candidates:
        for mirrored in (False, True):
            c = compare(prints, stored, mirrored, rule)
            if c.same_face and (
                best is None
                or (c.replayed, c.same_face, -c.motion)
                > (best.replayed, best.same_face, -best.motion)
            ):
                best = c
    return best


def replay_signals(
    session_id: str,
    prints: Sequence[FramePrint],
    seen_session_ids: Collection[str],
    candidates: Iterable[StoredCapture],
    rule: Rule = DEFAULT_RULE,
) -> list[Signal]:
    """Certain replay when the session id was seen, or when an earlier capture's frames come
    back (identical crops, or the same recording's sway); a weak signal when only the same face
    is seen again (half the frames or more): a genuine retry looks like that."""
    signals: list[Signal] = []
    if session_id and session_id in seen_session_ids:
        signals.append(Signal("session_replayed", CERTAIN, "this session id was already submitted"))
    best = best_comparison(prints, candidates, rule)
    if best is None:
        return signals
    if best.replayed:
        signals.append(Signal("frames_replayed", CERTAIN, best.describe()))
    elif 2 * best.same_face >= best.frames:
        signals.append(Signal("frames_similar", WEAK, best.describe()))
    return signals


# --- storage --------------------------------------------------------------------------------------

_RECORD = struct.Struct(">hqffff")
_BODY = DESCRIPTOR * DESCRIPTOR
# Version 2 blobs start with this byte (their placements are registered); version 1 blobs are
# bare records (FaceMesh placements). A record is 282 bytes, so a leading byte is unambiguous.
VERSION = 2


def pack_prints(prints: Sequence[FramePrint]) -> bytes:
    """A capture's fingerprints as bytes (the mirror hash is not kept: queries compute it).

    Version 2 (a leading byte) when every placement is registered, else version 1."""
    body = b"".join(
        _RECORD.pack(p.index, to_signed(p.hash), p.x, p.y, p.iod, p.roll) + p.descriptor
        for p in prints
    )
    return bytes([VERSION]) + body if prints and all(p.registered for p in prints) else body


def unpack_prints(data: bytes) -> tuple[FramePrint, ...]:
    """The inverse of pack_prints; reads version 1 and version 2 blobs."""
    size = _RECORD.size + _BODY
    registered = len(data) % size == 1 and data[0] == VERSION
    start0 = 1 if registered else 0
    out = []
    for start in range(start0, len(data) - size + 1, size):
        index, value, x, y, iod, roll = _RECORD.unpack_from(data, start)
        body = data[start + _RECORD.size : start + size]
        out.append(FramePrint(index, value & HASH_MASK, 0, body, x, y, iod, roll, registered))
    return tuple(out)
