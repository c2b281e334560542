"""Natural-motion and frame-order checks (worker/pipeline/motion.py): verdicts and margins on
genuine captures (tests/genuine.py) and still attacks (tests/stills.py), and their CPU cost
against the whole pipeline on the same captures, in one process.

    .venv/bin/python -m bench.bench_motion [--seeds 6]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from antihack.shared.domain.capture import CaptureLimits, parse_capture
from antihack.shared.sdk.sample import build_capture
from antihack.worker.pipeline.fusion import HACK_THRESHOLD
from antihack.worker.pipeline.motion import motion_report
from antihack.worker.pipeline.run import Pipeline, PipelineContext
from tests.blink import close_eyes
from tests.fixtures_images import astronaut
from tests.genuine import genuine_frames
from tests.stills import STILL_VARIANTS, cycled_frames, held_pattern, still_frames


def cases(seed: int) -> list[tuple[str, list[np.ndarray]]]:
    photo = genuine_frames(200 + seed, n=1)[0] if seed % 2 else astronaut()
    out = [
        ("genuine", genuine_frames(100 + seed)),
        ("genuine_still", genuine_frames(100 + seed, still=True)),
    ]
    out += [(f"still_{v}", still_frames(photo, v, seed=seed)) for v in STILL_VARIANTS]
    opened, closed, half = astronaut(), close_eyes(astronaut(), 1.0), close_eyes(astronaut(), 0.6)
    pattern = [0] * 6 + [1] * 3 + [0] * 7 if seed % 2 else [0, 1] * 8
    out.append(("two_stills", cycled_frames([opened, closed], pattern, seed=seed)))
    three = [0, 0, 0, 0, 2, 1, 1, 2, 0, 0, 0, 0, 0, 2, 1, 2]
    out.append(("three_stills", cycled_frames([opened, closed, half], three, seed=seed)))
    # Held 1-4 frames each, the per-copy change drawn from noise / shift / JPEG / all.
    rng = np.random.default_rng(50 + seed)
    variant = ("noise", "shift", "jpeg", "all")[seed % 4]
    held2 = cycled_frames([opened, closed], held_pattern(2, 16, rng), variant, seed=seed)
    held3 = cycled_frames([opened, closed, half], held_pattern(3, 16, rng), variant, seed=seed)
    out += [("two_stills_held", held2), ("three_stills_held", held3)]
    genuine = out[0][1]
    order = np.random.default_rng(seed).permutation(len(genuine))
    out.append(("genuine_shuffled", [genuine[i] for i in order]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args()
    pipeline = Pipeline.load()
    stats: dict[str, list[tuple[float, bool, object]]] = defaultdict(list)
    check_ms, total_ms = [], []
    for seed in range(args.seeds):
        for name, frames in cases(seed):
            capture = parse_capture(build_capture(frames), CaptureLimits())
            analysis = pipeline.analyze(capture, PipelineContext.fresh())
            total_ms.append(analysis.stage_ms["total"])
            # The motion check alone, on the pipeline's own meshes.
            faces = pipeline._faces(frames, type("T", (), {"stage": lambda self, n: _null()})())
            meshes = [m.points if m is not None else None for m in faces.marks]
            stamps = [f.timestamp_ms for f in capture.frames]
            start = time.perf_counter()
            report = motion_report(frames, meshes, stamps)
            check_ms.append((time.perf_counter() - start) * 1000)
            stats[name].append((analysis.score, analysis.score >= HACK_THRESHOLD, report))
    print(
        f"{'case':18s} hack@0.98  nonrigid_px   states  coherence     state_coh     "
        "order_ratio  order_rank  reasons"
    )
    for name, rows in stats.items():
        reps = [r for _, _, r in rows]

        def rng(values: list[float | None]) -> str:
            vals = [v for v in values if v is not None]
            return f"{min(vals):.3f}-{max(vals):.3f}" if vals else "-"

        codes = sorted({s.code + ":" + s.severity for r in reps for s in r.signals})  # type: ignore[attr-defined]
        hacks = sum(h for _, h, _ in rows)
        print(
            f"{name:18s} {hacks:2d}/{len(rows):<2d}     {rng([r.nonrigid_px for r in reps]):13s}"  # type: ignore[attr-defined]
            f" {rng([r.states for r in reps]):11s} {rng([r.coherence for r in reps]):13s}"  # type: ignore[attr-defined]
            f" {rng([r.state_coherence for r in reps]):13s}"  # type: ignore[attr-defined]
            f" {rng([r.order_ratio for r in reps]):11s}"  # type: ignore[attr-defined]
            f" {rng([r.order_rank for r in reps]):11s} {' '.join(codes)}"  # type: ignore[attr-defined]
        )
    print(
        f"motion check median {np.median(check_ms):.1f} ms, pipeline median "
        f"{np.median(total_ms):.1f} ms per 16-frame capture: "
        f"{100 * np.median(check_ms) / np.median(total_ms):.1f}%"
    )


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
