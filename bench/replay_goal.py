"""The replay rows of the issue-13 goal table, and the replay rule's margins on both sides.

``python -m bench.replay_goal [--moving 6] [--still 6] [--size 384] [--frames 16] [--seed 7]
[--extra]`` makes the genuine set ``python -m bench.make_genuine`` writes (seeds from 501: moving
people, then people sitting very still) and the kit's replay attacks of it
(``antihack attacks make GENUINE -o SET --seed 7``: the same files, made in memory), then runs
the real pipeline as ``antihack eval --with-history`` does: genuine captures first, each judged
against the ones before it (a retry of the same person), then every replay against all of them
(deployment scope: a replay through another partner). It prints, per row, how many reach 0.98
and the replay rule's measures (``replay.compare``): the motion residual as a fraction of the
sway, the sway itself (inter-ocular distances), and the crop RMS; then every genuine capture
against every other one (both orders: 2 x C(n, 2) retries) and the margins to the thresholds.
``--extra`` adds the issue's harder edits (tests/test_replay.py's): rotation +-10 degrees,
scale 0.8 and 1.25, a 10% crop, JPEG q30, and mirror + rotation + scale + JPEG, of each capture.

CPU: the registration (``replay.registered_motion``) is timed alone on each genuine capture's
frames and FaceMesh points, against the pipeline's whole analysis of the same capture.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from antihack.shared.domain.capture import CaptureLimits, decode_frames, parse_capture
from antihack.shared.proto import liveness_pb2 as pb
from antihack.shared.sdk.attacks import attack_rng, make_attack
from antihack.worker.pipeline.fusion import HACK_THRESHOLD
from antihack.worker.pipeline.replay import (
    DEFAULT_RULE,
    Comparison,
    FramePrint,
    MemoryHistory,
    StoredCapture,
    best_comparison,
    registered_motion,
)
from antihack.worker.pipeline.run import Analysis, Pipeline, PipelineContext, _Timer
from tests.genuine import genuine_capture
from tests.transforms import rescale, rotate

Image = NDArray[np.uint8]
REPLAYS = ("replay_jpeg", "replay_rotate", "replay_crop", "replay_mirror")


def _crop(image: Image) -> Image:
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[h // 10 :, w // 10 :])


def _mirror(image: Image) -> Image:
    return np.ascontiguousarray(image[:, ::-1])


# Each frame is encoded once more by the capture (at `quality`): "jpeg q30" is that encoding.
EXTRA: dict[str, tuple[Callable[[Image], Image], int]] = {
    "x_rotate+10": (rotate(10), 90),
    "x_rotate-10": (rotate(-10), 90),
    "x_scale0.8": (rescale(0.8), 90),
    "x_scale1.25": (rescale(1.25), 90),
    "x_crop10%": (_crop, 90),
    "x_jpeg_q30": (lambda image: image, 30),
    "x_mirror+rot+scale+q30": (lambda image: rotate(7, 0.85)(_mirror(image)), 30),
}


@dataclass
class Row:
    name: str
    source: str
    score: float
    reasons: list[str]
    comparison: Comparison | None


def _analyse(pipeline: Pipeline, capture: pb.Capture, history: MemoryHistory) -> Analysis:
    limits = CaptureLimits()
    parsed = parse_capture(capture.SerializeToString(), limits)
    latest = max((f.timestamp_ms for f in parsed.frames), default=0)
    ctx = PipelineContext.fresh(latest + 1000 if latest else None, history=history)
    return pipeline.analyze(parsed, ctx)


def _transformed(capture: pb.Capture, edit: Callable[[Image], Image], quality: int) -> pb.Capture:
    from antihack.shared.domain.capture import encode_jpeg

    out = pb.Capture()
    out.CopyFrom(capture)
    out.session_id = "x" + capture.session_id[1:]
    frames = decode_frames(capture, CaptureLimits())
    for frame, image in zip(out.frames, frames, strict=True):
        frame.image = encode_jpeg(edit(image), quality)
    return out


def _compare(prints: Sequence[FramePrint], source: Sequence[FramePrint]) -> Comparison | None:
    return best_comparison(prints, [StoredCapture("source", "k", tuple(source))])


def _row(title: str, name: str, analysis: Analysis, source: Sequence[FramePrint]) -> Row:
    """An attack's row: its verdict and its comparison with the capture it was made from."""
    return Row(
        title, name, analysis.score, analysis.reasons, _compare(analysis.frame_prints, source)
    )


def _span(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def _report(title: str, rows: list[Row]) -> None:
    found = [r.comparison for r in rows if r.comparison is not None]
    hacks = sum(r.score >= HACK_THRESHOLD for r in rows)
    reasons = sorted({c for r in rows for c in r.reasons if c.startswith("frames_")})
    print(
        f"{title:26s} {hacks:2d}/{len(rows):<3d} "
        f"motion {_span([c.motion for c in found]):11s} "
        f"sway {_span([c.sway for c in found], '{:.4f}'):15s} "
        f"rms {_span([c.rms for c in found], '{:.3f}'):12s} {','.join(reasons)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_goal", description=__doc__)
    parser.add_argument("--moving", type=int, default=6)
    parser.add_argument("--still", type=int, default=6)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=501)
    parser.add_argument("--seed", type=int, default=7, help="the kit's --seed")
    parser.add_argument("--extra", action="store_true", help="also the issue's harder edits")
    args = parser.parse_args(argv)

    pipeline = Pipeline.load()
    now = int(time.time() * 1000)
    genuine: dict[str, pb.Capture] = {}
    for i in range(args.moving + args.still):
        seed, still = args.first_seed + i, i >= args.moving
        name = f"g{seed}{'_still' if still else ''}.pb"
        genuine[name] = genuine_capture(
            seed, n=args.frames, still=still, size=args.size, now_ms=now - 60_000 + i * 2000
        )

    history = MemoryHistory()
    prints: dict[str, list[FramePrint]] = {}
    genuine_rows, seconds, register_ms = [], [], []
    for name, capture in genuine.items():
        started = time.process_time()
        analysis = _analyse(pipeline, capture, history)
        seconds.append(time.process_time() - started)
        prints[name] = analysis.frame_prints
        earlier = [c for c in history.captures]
        best = best_comparison(analysis.frame_prints, earlier) if earlier else None
        genuine_rows.append(Row(name, name, analysis.score, analysis.reasons, best))
        history.add(name, "partner-a", analysis.frame_prints)
        # The registration alone, on the same frames and FaceMesh points.
        frames = decode_frames(capture, CaptureLimits())
        faces = pipeline._faces(frames, _Timer())
        marks = [(f, m.points) for f, m in zip(frames, faces.marks, strict=True) if m is not None]
        started = time.process_time()
        registered_motion([f for f, _ in marks], [p for _, p in marks])
        register_ms.append(1000 * (time.process_time() - started))

    attack_rows: dict[str, list[Row]] = {}
    for attack in REPLAYS:
        for name, capture in genuine.items():
            frames = decode_frames(capture, CaptureLimits())
            made, _ = make_attack(capture, frames, attack, attack_rng(args.seed, name, attack))
            row = _row(attack, name, _analyse(pipeline, made, history.scoped(None)), prints[name])
            attack_rows.setdefault(f"{attack}{'_still' if 'still' in name else ''}", []).append(row)
    if args.extra:
        for label, (edit, quality) in EXTRA.items():
            for name, capture in genuine.items():
                analysis = _analyse(pipeline, _transformed(capture, edit, quality), history)
                row = _row(label, name, analysis, prints[name])
                attack_rows.setdefault(label, []).append(row)

    rule = DEFAULT_RULE
    print(
        f"rule: motion <= {rule.max_motion} of the sway over >= {rule.full_pairs} pairs "
        f"(<= {rule.short_motion} over {rule.min_pairs}-{rule.full_pairs - 1}), "
        f"sway >= {rule.min_sway} (registered), >= {rule.min_overlap:.0%} of the shorter "
        f"capture; or crop RMS <= {rule.exact_rms}"
    )
    print(f"{'row':26s} >=0.98  measures against the source capture")
    for title, rows in attack_rows.items():
        _report(title, rows)
    _report("genuine (vs earlier)", genuine_rows)

    # Every genuine capture against every other (both orders): what a retry can look like.
    retries = []
    names = list(prints)
    for a in names:
        for b in names:
            if a != b:
                c = _compare(prints[a], prints[b])
                if c is not None:
                    retries.append((a, b, c))
    eligible = [(a, b, c) for a, b, c in retries if c.sway >= rule.min_sway and c.long_enough]
    print(
        f"retries: {len(retries)} ordered pairs, {sum(c.replayed for *_, c in retries)} "
        f"called a replay; {len(eligible)} with sway >= {rule.min_sway} over enough pairs"
    )
    closest = sorted(eligible, key=lambda t: t[2].motion)[:5]
    for a, b, c in closest:
        print(
            f"  closest retry {a} vs {b}: motion {c.motion:.3f}, sway {c.sway:.4f}, "
            f"{c.pairs} pairs, rms {c.rms:.3f}"
        )
    caught = [
        r.comparison for rows in attack_rows.values() for r in rows if r.comparison is not None
    ]
    worst = max((c.motion for c in caught if c.rms > rule.exact_rms), default=float("nan"))
    low_sway = min((c.sway for c in caught), default=float("nan"))
    best_retry = min((c.motion for *_, c in eligible), default=float("nan"))
    print(
        f"margins: replay motion max {worst:.3f} < {rule.max_motion} < retry min "
        f"{best_retry:.3f} (x{rule.max_motion / worst:.2f} / x{best_retry / rule.max_motion:.2f});"
        f" replay sway min {low_sway:.4f} vs min_sway {rule.min_sway} "
        f"(x{low_sway / rule.min_sway:.2f})"
    )
    print(
        f"CPU: registration median {statistics.median(register_ms):.1f} ms per capture, "
        f"analysis median {1000 * statistics.median(seconds):.0f} ms: "
        f"{statistics.median(register_ms) / (10 * statistics.median(seconds)):.1f}%"
    )


if __name__ == "__main__":
    main()
