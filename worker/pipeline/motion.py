"""Natural motion and frame order of a face across frames (issue #13, items 1 and 4).

A still photo fed as video, however it is re-noised, shifted, scaled, rotated or re-encoded per
frame, moves only rigidly: one 2D transform maps any frame's face onto any other's, up to
noise. A live face also moves non-rigidly: a head turn shows parallax (the nose moves more than
the cheeks), eyelids, lips and cheeks move. So each face is brought onto a reference frame's
face (a similarity from the FaceMesh points), dense optical flow is measured inside the face,
and the flow a homography explains is taken away; what is left is the non-rigid motion field of
each frame. FaceMesh points alone are not enough: their jitter on one photo shifted by 2 px is
larger than a still-sitting person's motion, while the flow residual of a shifted photo stays
at ~0.05 px.

Rules (figures: bench/bench_motion.py, README "Natural motion and frame order"):
- the frames' residual fields fall into one group within STATE_RADIUS px (the measured noise
  floor with a margin) and change incoherently from frame to frame (SINGLE_COHERENCE_MIN)
  -> ``still_image_injected``: one photo re-noised, moved or re-encoded per frame;
- two or three groups, incoherent (COHERENCE_MIN), whose frames each sit as close to their
  group's mean as copies of one photo do (CYCLED_SPREAD_MAX), or that alternate every frame
  (ALTERNATING_MAX) -> ``still_image_injected``: two or
  three photos cycled (eyes open / closed) to fake a blink. Two or three loose groups are only
  ``still_image_suspected`` (weak): a live face with little non-rigid motion can read so (7 of
  20 generated 8-frame genuine captures did before this rule);
- one to three narrow states lying apart (complete linkage, STATE_DIAMETER,
  STATE_SEPARATION_MIN) inside which successive frames
  are no more alike than distant ones (state_coherence, STATE_COHERENCE_MAX) ->
  ``still_image_injected``: photos held for several frames each, every copy with fresh noise,
  where a live face drifts;
- frame order: the face's path through the frames (points normalised by face size) taken in
  timestamp order is much longer than the shortest path through the same frames ->
  ``frames_out_of_order`` (frames shuffled after capture).
Frames without a face are left out; with fewer than MIN_FRAMES faces nothing is judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.worker.pipeline.fusion import CERTAIN, STRONG, WEAK, Signal

Image = NDArray[np.uint8]
Points = NDArray[np.float32]  # (468, 3) FaceMesh points in frame pixels
Floats = NDArray[np.float64]

# The face is compared in a FLOW_SIDE-px square around the reference face's landmarks.
FLOW_SIDE = 96
FACE_MARGIN = 1.1
# Flow is read on a grid this many px apart inside the face hull, shrunk by ERODE_PX.
GRID_STEP = 3
ERODE_PX = 4
# A face more than STRAY_SHIFT face sizes from the frames' median face, or whose size differs
# from theirs by more than exp(STRAY_LOG), is another detection (e.g. a face-like patch in the
# background), not the person: that frame is left out.
STRAY_SHIFT, STRAY_LOG = 0.5, 0.4
MIN_FACE_PX = 16.0  # a mesh smaller than this is no face to measure motion on
# Below this many frames with a face there is no motion to judge; below MIN_CERTAIN_FRAMES a
# still is only suspected (weak): with 5 frames one still-sitting genuine capture in 8 read as
# a still, and with 8 frames (512 px, seeds 601-606 of bench.make_genuine) 3 moving genuine
# captures of 6 did, one by each rule; 12-frame (seeds 701-712) and 16-frame ones read none.
MIN_FRAMES = 3
MIN_CERTAIN_FRAMES = 12
# One photo, or two or three cycled, is the same attack.
MAX_STILL_STATES = 3
# Frames whose residual fields are within STATE_RADIUS (RMS px on the FLOW_SIDE crop) show the
# same picture. Measured (bench/bench_motion.py): the largest distance between two copies of one
# photo is 0.10 px; genuine frames of a still-sitting person differ by up to 0.3-1 px.
STATE_RADIUS = 0.25
CLIP_PX = 0.5
COHERENCE_MIN = 0.3
# One group: copies of one photo cohere at most 0.13 (bench_motion's still variants), a genuine face
# whose residual forms one group at least 0.32 (20 seeds x 8 and 16 frames): 0.2 between.
SINGLE_COHERENCE_MIN = 0.2
# Cycled stills: every frame of two cycled photos sits within 0.074-0.108 px RMS of its group's
# mean, of three 0.111-0.142; a genuine capture whose residual forms 2-3 groups has a frame at
# 0.140-0.203 px. 0.12 takes two cycled photos as certain and leaves the genuine ones (and most
# three-photo cycles, which frames_out_of_order often catches) at weak.
CYCLED_SPREAD_MAX = 0.12
# ... or photos swapped every frame: consecutive residuals then point opposite ways (coherence
# -0.79 to -0.81 for two photos alternated, measured), which no genuine capture came near
# (2-3 groups: -0.32 at the lowest).
ALTERNATING_MAX = -0.5
# Cycled stills at the noise floor: the frames fall into at most MAX_STILL_STATES states, each
# no wider than STATE_DIAMETER px (complete linkage: every two frames of a state are that close;
# copies of one photo re-encoded down to JPEG q30 lie up to ~0.3 px apart), and inside each
# state the fields change with no memory of the frame before (state_coherence: copies of a photo
# differ by fresh noise each time, a live face drifts). Measured (bench/motion_goal.py): the
# kit's two_stills at most 0.135, cycled stills mostly below 0.1; genuine captures whose states
# are that narrow at least 0.21 (8 frames, diameter 0.2) and 0.26 (16 frames, diameter 0.3).
# With fewer than STATE_LONG_FRAMES frames the states are small and their coherence noisy: at
# diameter 0.25 one 8-frame genuine capture read 0.02, hence the narrower STATE_DIAMETER_SHORT.
STATE_DIAMETER, STATE_DIAMETER_SHORT, STATE_LONG_FRAMES = 0.3, 0.2, 12
STATE_COHERENCE_MAX = 0.15
# With two or three states, they must also lie apart: the closest frames of two states at least
# STATE_SEPARATION_MIN times the widest state's diameter (photos swapped, no frame between). A
# still-sitting genuine capture whose blink made its own states read 0.61-0.68 with a state
# coherence of -0.07 (bench_motion's seed 103).
STATE_SEPARATION_MIN = 0.8
# Frame order: timestamp-order path length over the shortest path, and the least motion (the
# shortest path's mean step, in face sizes) for the order to be readable at all.
ORDER_RATIO_WEAK, ORDER_RATIO_STRONG = 1.6, 2.2
ORDER_MIN_STEP = 0.006
# order_rank (how far each frame's nearest timestamp neighbour is down its list of nearest
# frames) is reported, not a rule: shuffled captures read 0.18 and more, but a genuine one with
# a path ratio of 1.6 read 0.22 (bench_motion's seed 101).


@dataclass(frozen=True)
class MotionReport:
    """What the frames show; None where too few frames had a face to tell."""

    faces: int  # frames with a face
    nonrigid_px: float | None  # largest residual (non-rigid) motion of a frame, RMS px
    states: int | None  # distinct non-rigid states at STATE_RADIUS
    coherence: float | None  # how smoothly the residual changes frame to frame (see coherence)
    order_ratio: float | None  # timestamp-order path / shortest path (1 = in order)
    signals: tuple[Signal, ...]
    # Least state_coherence over the fits of 1..MAX_STILL_STATES narrow states lying apart
    # (noise_floor_states; None: no such fit).
    state_coherence: float | None = None
    order_rank: float | None = None  # see order_rank; None where the order was not judged


def _similarity(src: Floats, dst: Floats) -> Floats:
    """2x3 least-squares similarity (Umeyama) taking ``src`` points onto ``dst``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sv, vt = np.linalg.svd(d.T @ s)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    fix = np.diag([1.0, sign])
    rot = u @ fix @ vt
    scale = float((sv * np.diag(fix)).sum() / max((s**2).sum(), 1e-9))
    linear = scale * rot
    return np.hstack([linear, (mu_d - linear @ mu_s)[:, None]])


def _normalised_crop(frame: Image, matrix: Floats, mask: NDArray[np.bool_]) -> Image:
    colour = cv2.warpAffine(
        frame, matrix, (FLOW_SIDE, FLOW_SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    crop = cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY).astype(np.float32)
    # Exposure flicker and another camera gain must not read as motion.
    inside = crop[mask]
    crop = (crop - inside.mean()) / (inside.std() + 1e-6) * 40 + 128
    return np.asarray(np.clip(crop, 0, 255), dtype=np.uint8)


def _design(xs: Floats, ys: Floats) -> Floats:
    """Linearised homography: u = a0 + a1 x + a2 y - x (g x + h y), v likewise (8 params)."""
    zero, one = np.zeros_like(xs), np.ones_like(xs)
    rows_u = np.stack([one, xs, ys, zero, zero, zero, -xs * xs, -xs * ys], 1)
    rows_v = np.stack([zero, zero, zero, one, xs, ys, -xs * ys, -ys * ys], 1)
    return np.vstack([rows_u, rows_v])


def residual_fields(frames: Sequence[Image], meshes: Sequence[Points]) -> Floats:
    """Per frame, the non-rigid flow (P, 2) inside the face relative to the middle frame (px)."""
    ref = len(frames) // 2
    ref_xy = meshes[ref][:, :2].astype(np.float64)
    low, high = ref_xy.min(0), ref_xy.max(0)
    k = FLOW_SIDE / (FACE_MARGIN * float(max(high - low)) or 1.0)
    offset = FLOW_SIDE / 2 - k * (low + high) / 2
    target = ref_xy * k + offset
    hull = cv2.convexHull(target.astype(np.float32)).astype(np.int32)
    mask8 = np.zeros((FLOW_SIDE, FLOW_SIDE), np.uint8)
    cv2.fillConvexPoly(mask8, hull, 1)
    mask = mask8.astype(bool)
    inner = cv2.erode(mask8, np.ones((2 * ERODE_PX + 1,) * 2, np.uint8)).astype(bool)
    grid = np.zeros_like(inner)
    grid[::GRID_STEP, ::GRID_STEP] = True
    ys, xs = np.nonzero(inner & grid)
    if len(xs) < 16:  # a degenerate mesh: nothing inside the face to measure
        return np.zeros((len(frames), 0, 2))
    crops = [
        _normalised_crop(f, _similarity(m[:, :2].astype(np.float64), target), mask)
        for f, m in zip(frames, meshes, strict=True)
    ]
    centre = FLOW_SIDE / 2
    design = _design((xs - centre) / FLOW_SIDE, (ys - centre) / FLOW_SIDE)
    pinv = np.linalg.pinv(design)
    flow = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    fields = np.zeros((len(frames), len(xs), 2))
    for i, crop in enumerate(crops):
        if i == ref:
            continue
        dense = np.asarray(flow.calc(crops[ref], crop, None))  # type: ignore[call-overload]
        vectors = dense[ys, xs].astype(np.float64)
        stacked = np.concatenate([vectors[:, 0], vectors[:, 1]])
        rest = stacked - design @ (pinv @ stacked)
        fields[i] = rest.reshape(2, -1).T
    return fields


def _clipped(fields: Floats) -> Floats:
    """Fields less their mean over frames (the reference frame's own noise), each vector's
    length clipped to CLIP_PX so that a local flow failure cannot dominate a distance."""
    centred = fields - fields.mean(0)
    length = np.sqrt((centred**2).sum(-1, keepdims=True))
    return np.asarray(centred * np.minimum(1.0, CLIP_PX / np.maximum(length, 1e-9)))


def _rms(a: Floats, b: Floats) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(-1).mean()))


def group_states(fields: Floats, radius: float = STATE_RADIUS) -> list[int]:
    """Each frame's group: frames within ``radius`` (RMS px) of a group's first frame."""
    leaders: list[int] = []
    labels = []
    for i, field in enumerate(fields):
        near = [k for k, lead in enumerate(leaders) if _rms(field, fields[lead]) <= radius]
        if not near:
            leaders.append(i)
            near = [len(leaders) - 1]
        labels.append(near[0])
    return labels


def state_spread(fields: Floats, labels: Sequence[int]) -> float:
    """The largest RMS distance (px) of a frame's field from its group's mean field."""
    groups = np.asarray(labels)
    worst = 0.0
    for g in set(labels):
        members = fields[groups == g]
        if len(members) >= 2:
            rms = np.sqrt(((members - members.mean(0)) ** 2).sum(-1).mean(-1))
            worst = max(worst, float(rms.max()))
    return worst


def coherence(fields: Floats, labels: Sequence[int]) -> float:
    """Mean cosine between consecutive frames' fields, each less its group's mean.

    Live motion changes smoothly, so a frame's residual resembles the next one's (0.5-0.9);
    noise on copies of one picture does not (about 0). 0 when no two consecutive frames share
    a group (pictures alternated every frame).
    """
    groups = np.asarray(labels)
    means = np.stack([fields[groups == g].mean(0) for g in groups])
    rest = fields - means
    cosines = []
    for i in range(len(rest) - 1):
        if groups[i] != groups[i + 1]:
            continue
        a, b = rest[i].ravel(), rest[i + 1].ravel()
        cosines.append(float(a @ b / (np.sqrt((a @ a) * (b @ b)) + 1e-12)))
    return float(np.mean(cosines)) if cosines else 0.0


def complete_linkage(dist: Floats, k: int) -> tuple[list[int], float]:
    """Frames grouped into ``k`` clusters by complete linkage, and the widest cluster's diameter
    (the largest distance between two frames of one cluster)."""
    n = len(dist)
    labels = list(range(n))
    between = dist.astype(np.float64).copy()
    np.fill_diagonal(between, np.inf)
    alive = list(range(n))
    while len(alive) > k:
        sub = between[np.ix_(alive, alive)]
        a, b = np.unravel_index(int(np.argmin(sub)), sub.shape)
        keep, gone = alive[min(a, b)], alive[max(a, b)]
        between[keep] = between[:, keep] = np.maximum(between[keep], between[gone])
        between[keep, keep] = np.inf
        labels = [keep if g == gone else g for g in labels]
        alive.remove(gone)
    groups = np.asarray(labels)
    same = (groups[:, None] == groups[None]) & ~np.eye(n, dtype=bool)
    return labels, float(dist[same].max()) if same.any() else 0.0


def state_coherence(fields: Floats, labels: Sequence[int]) -> float | None:
    """How much more a frame's residual resembles the next frame of its state than the others.

    Within each state of at least 3 frames, each field less the state's mean; the mean cosine
    between successive members (in time order) less the mean cosine between the other pairs.
    Copies of one photo differ by fresh noise each time: about 0, whatever the state's size
    (taking the mean biases every pair alike). A live face drifts: successive frames alike,
    distant ones less. None when no state has 3 frames.
    """
    groups = np.asarray(labels)
    successive: list[float] = []
    others: list[float] = []
    for g in sorted(set(labels)):
        members = fields[groups == g]
        if len(members) < 3:
            continue
        rest = (members - members.mean(0)).reshape(len(members), -1)
        unit = rest / (np.linalg.norm(rest, axis=1, keepdims=True) + 1e-12)
        cos = unit @ unit.T
        for a in range(len(members) - 1):
            successive.append(float(cos[a, a + 1]))
            others.extend(float(c) for c in cos[a, a + 2 :])
    if not successive or not others:
        return None
    return float(np.mean(successive) - np.mean(others))


def noise_floor_states(fields: Floats) -> float | None:
    """The least state_coherence over the fits of 1..MAX_STILL_STATES states no wider than
    STATE_DIAMETER (STATE_DIAMETER_SHORT for short captures) and, with several, at least
    STATE_SEPARATION_MIN diameters apart; None when no such fit has a state of 3 frames."""
    dist = np.sqrt(((fields[:, None] - fields[None]) ** 2).sum(-1).mean(-1))
    widest = STATE_DIAMETER if len(fields) >= STATE_LONG_FRAMES else STATE_DIAMETER_SHORT
    best: float | None = None
    for k in range(1, min(MAX_STILL_STATES, len(fields)) + 1):
        labels, diameter = complete_linkage(dist, k)
        groups = np.asarray(labels)
        apart = groups[:, None] != groups[None]
        gap = float(dist[apart].min()) if apart.any() else np.inf
        if diameter > widest or gap < STATE_SEPARATION_MIN * diameter:
            continue
        value = state_coherence(fields, labels)
        if value is not None and (best is None or value < best):
            best = value
    return best


def order_rank(dist: Floats) -> float:
    """Mean over frames of where its nearer timestamp neighbour ranks among the frames nearest
    to it, 0 (always the nearest) to 1 (always the furthest); about 1/3 in a random order."""
    n = len(dist)
    ranks = []
    for i in range(n):
        row = np.where(np.arange(n) == i, np.inf, dist[i])
        order = [int(j) for j in np.argsort(row, kind="stable")[: n - 1]]
        ranks.append(min(order.index(j) for j in (i - 1, i + 1) if 0 <= j < n))
    return float(np.mean(ranks)) / max(n - 2, 1)


def _path(dist: Floats, order: Sequence[int]) -> float:
    return float(sum(dist[a, b] for a, b in zip(order, order[1:], strict=False)))


def _greedy(dist: Floats, start: int) -> list[int]:
    order, left = [start], np.ones(len(dist), dtype=bool)
    left[start] = False
    while left.any():
        row = np.where(left, dist[order[-1]], np.inf)
        order.append(int(row.argmin()))
        left[order[-1]] = False
    return order


def _two_opt(dist: Floats, order: list[int]) -> list[int]:
    """Reverse segments of an open path while that shortens it (endpoints may move too)."""
    n = len(order)
    improved = True
    while improved:
        improved = False
        for i in range(n - 1):
            for j in range(i + 1, n):
                a, b = order[i - 1] if i > 0 else None, order[i]
                c, e = order[j], order[j + 1] if j + 1 < n else None
                before = (dist[a, b] if a is not None else 0.0) + (
                    dist[c, e] if e is not None else 0.0
                )
                after = (dist[a, c] if a is not None else 0.0) + (
                    dist[b, e] if e is not None else 0.0
                )
                if after < before - 1e-12:
                    order[i : j + 1] = order[i : j + 1][::-1]
                    improved = True
    return order


def shortest_path(dist: Floats) -> float:
    """A near-shortest open path through all points: best nearest-neighbour path, then 2-opt."""
    paths = [_greedy(dist, start) for start in range(len(dist))]
    best = min(paths, key=lambda order: _path(dist, order))
    return _path(dist, _two_opt(dist, best))


def order_ratio(meshes: Sequence[Points]) -> tuple[float, float, float]:
    """(timestamp-order path / shortest path, shortest path's mean step in face sizes,
    order_rank), on the face's points normalised by its size."""
    xy = np.stack([m[:, :2].astype(np.float64) for m in meshes])
    size = float(np.median([np.ptp(p[:, 0]) + np.ptp(p[:, 1]) for p in xy])) / 2 or 1.0
    flat = xy.reshape(len(xy), -1) / size
    dist = np.sqrt(((flat[:, None] - flat[None]) ** 2).mean(-1) * 2)
    shortest = shortest_path(dist)
    in_order = _path(dist, range(len(xy)))
    return in_order / max(shortest, 1e-9), shortest / (len(xy) - 1), order_rank(dist)


def _consistent(
    index: list[int], frames: Sequence[Image], meshes: Sequence[Points | None]
) -> list[int]:
    """The frames whose face is where most frames' face is (a stray detection is dropped).

    Places and sizes are fractions of each frame's size, so frames of different sizes agree.
    """
    boxes = {}
    for i in index:
        mesh = meshes[i]
        if mesh is None:
            continue
        xy = mesh[:, :2].astype(np.float64)
        size = float(np.ptp(xy[:, 0]) + np.ptp(xy[:, 1])) / 2
        if size >= MIN_FACE_PX:
            height, width = frames[i].shape[:2]
            unit = float(np.sqrt(width * height))
            boxes[i] = (xy.mean(0) / unit, size / unit)
    if not boxes:
        return []
    centre = np.median([c for c, _ in boxes.values()], axis=0)
    size = float(np.median([s for _, s in boxes.values()]))
    return [
        i
        for i, (c, s) in boxes.items()
        if np.linalg.norm(c - centre) <= STRAY_SHIFT * size and abs(np.log(s / size)) <= STRAY_LOG
    ]


def motion_report(
    frames: Sequence[Image], meshes: Sequence[Points | None], timestamps_ms: Sequence[int]
) -> MotionReport:
    """Judge natural motion and frame order; ``meshes[i]`` is None where frame i has no face."""
    with_face = [i for i, m in enumerate(meshes) if m is not None]
    if len(with_face) < MIN_FRAMES:
        return MotionReport(len(with_face), None, None, None, None, ())
    # Judge in time order; unknown (0) or equal timestamps keep capture order.
    with_face.sort(key=lambda i: (timestamps_ms[i] if i < len(timestamps_ms) else 0, i))
    with_face = _consistent(with_face, frames, meshes)
    if len(with_face) < MIN_FRAMES:
        return MotionReport(len(with_face), None, None, None, None, ())
    faces = [frames[i] for i in with_face]
    points = [m for i in with_face if (m := meshes[i]) is not None]
    fields = residual_fields(faces, points)
    if fields.shape[1] == 0:
        return MotionReport(len(faces), None, None, None, None, ())
    nonrigid = float(np.sqrt((fields**2).sum(-1).mean(-1)).max())
    clipped = _clipped(fields)
    labels = group_states(clipped, STATE_RADIUS)
    states = len(set(labels))
    smooth = coherence(clipped, labels)
    spread = state_spread(clipped, labels)
    floor = noise_floor_states(clipped)
    at_floor = floor is not None and floor <= STATE_COHERENCE_MAX
    signals: list[Signal] = []
    still_limit = MAX_STILL_STATES if len(faces) > 2 * MAX_STILL_STATES else 1
    single = states == 1 and smooth < SINGLE_COHERENCE_MIN
    cycled = 1 < states <= still_limit and smooth < COHERENCE_MIN
    if single or cycled or at_floor:
        what = "one picture" if states == 1 else f"{states} pictures cycled"
        if at_floor and not (single or cycled):
            what = "a few pictures, each repeated with fresh noise"
        detail = f"{len(faces)} frames with a face show {what}: no natural motion"
        exact = single or at_floor or spread <= CYCLED_SPREAD_MAX or smooth <= ALTERNATING_MAX
        if len(faces) >= MIN_CERTAIN_FRAMES and exact:
            signals.append(Signal("still_image_injected", CERTAIN, detail))
        else:  # too few frames, or loose groups a live face with little motion can make
            signals.append(Signal("still_image_suspected", WEAK, detail))
    # Frame order on places relative to each frame's size (frames may differ in size).
    ratio, step, rank = order_ratio(
        [p / float(np.sqrt(f.shape[0] * f.shape[1])) for p, f in zip(points, faces, strict=True)]
    )
    readable = step >= ORDER_MIN_STEP and not any(s.severity == CERTAIN for s in signals)
    if readable and ratio >= ORDER_RATIO_WEAK:
        severity = STRONG if ratio >= ORDER_RATIO_STRONG else WEAK
        detail = (
            f"the face's path in timestamp order is {ratio:.1f}x the shortest path"
            f" (neighbour rank {rank:.2f})"
        )
        signals.append(Signal("frames_out_of_order", severity, detail))
    return MotionReport(
        len(faces),
        nonrigid,
        states,
        smooth,
        ratio if readable else None,
        tuple(signals),
        floor,
        rank if readable else None,
    )
