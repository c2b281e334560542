"""Margins of the natural-motion and frame-order rules (worker/pipeline/motion.py) on a wider
set than the kit's: cycled stills held 1-4 frames each, shuffled captures, and genuine captures
moving and sitting very still, at 8 and 16 frames and 384-512 px.

    .venv/bin/python -m bench.motion_goal [--seeds 20] [--cycled 24]

Cases (all deterministic):
- genuine: tests/genuine.py seeds 0..N-1 at 8 and 16 frames, 512 px, moving and sitting still;
  seeds 900-923 at 16 frames, 384/448 px (16 moving, 8 still), made after the first thresholds;
- shuffled: each 16-frame genuine capture above in a random order;
- cycled stills: 2 or 3 photos (the astronaut with open / closed / half-closed eyes, or the
  most different frames of a genuine capture: moving, sitting still or blinking), each copy
  changed per frame (tests/stills.py: noise, shift, JPEG, all of them with scale and
  rotation), held 1-4 frames each (tests.stills.held_pattern), 8 and 16 frames;
- one still per frame variant, 8 and 16 frames.
Each capture's faces come from the pipeline's own models; the motion check runs on them as the
pipeline runs it (frames decoded from JPEG). Prints, per case, how many reach a hack (a certain
or strong signal), the measures' ranges and the captures on the wrong side.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from antihack.worker.pipeline.fusion import CERTAIN, STRONG
from antihack.worker.pipeline.motion import MotionReport, motion_report
from antihack.worker.pipeline.run import Pipeline, _Timer
from tests.blink import close_eyes
from tests.fixtures_images import astronaut
from tests.genuine import genuine_frames
from tests.stills import STILL_VARIANTS, held_pattern, perturbed, still_frames

Frames = list[np.ndarray]
CYCLED_VARIANTS = ("noise", "shift", "jpeg", "all")


def _distinct(frames: Frames, k: int) -> Frames:
    """The middle frame and the k-1 frames most different from those picked before."""
    small = [np.asarray(f[::8, ::8], np.int16) for f in frames]
    chosen = [len(frames) // 2]
    while len(chosen) < k:
        gaps = [min(float(np.abs(s - small[c]).mean()) for c in chosen) for s in small]
        chosen.append(int(np.argmax(gaps)))
    return [frames[i] for i in chosen]


def _shuffled(frames: Frames, seed: int) -> Frames:
    order = np.random.default_rng(seed).permutation(len(frames))
    return [frames[i] for i in order]


def cases(seeds: int, cycled: int, holdout: int = 24) -> Iterator[tuple[str, str, Frames]]:
    """(case, name, frames) for every capture of the set."""
    for seed in range(seeds):
        for n in (8, 16):
            for still in (False, True):
                kind = "still" if still else "moving"
                frames = genuine_frames(seed, n=n, still=still, size=512)
                yield f"genuine_{kind}_{n}", f"s{seed}", frames
                if n == 16:
                    yield f"shuffled_{kind}", f"s{seed}", _shuffled(frames, 1000 + seed)
    for seed in range(900, 900 + holdout):
        still = seed >= 916
        kind = "still" if still else "moving"
        frames = genuine_frames(seed, n=16, still=still, size=384 if seed % 2 else 448)
        yield f"holdout_{kind}_16", f"s{seed}", frames
        yield f"holdout_shuffled_{kind}", f"s{seed}", _shuffled(frames, seed)
    for seed in range(cycled):
        rng = np.random.default_rng(seed)
        source = seed % 4  # astronaut, moving, sitting still, blinking
        if source == 0:
            eyes = [astronaut(), close_eyes(astronaut(), 1.0), close_eyes(astronaut(), 0.6)]
        else:
            frames = genuine_frames(
                700 + seed,
                n=16,
                still=source == 2,
                size=384 if seed % 2 else 512,
                challenges=("BLINK",) if source == 3 else (),
            )
            eyes = _distinct(frames, 3)
        for k in (2, 3):
            for n in (8, 16):
                variant = CYCLED_VARIANTS[(seed + k + n) % len(CYCLED_VARIANTS)]
                pattern = held_pattern(k, n, rng)
                frames = [perturbed(eyes[i], variant, rng) for i in pattern]
                yield f"cycled{k}_{n}", f"s{seed}/{variant}/src{source}", frames
    for seed in range(12):
        size = 384 if seed % 3 else 512
        photo = genuine_frames(800 + seed, n=1, still=seed % 2 == 1, size=size)[0]
        photo = astronaut() if seed % 4 == 0 else photo
        variant = STILL_VARIANTS[seed % len(STILL_VARIANTS)]
        for n in (8, 16):
            yield f"still_{n}", f"s{seed}/{variant}", still_frames(photo, variant, n, seed)


def _hack(report: MotionReport) -> bool:
    return any(s.severity in (CERTAIN, STRONG) for s in report.signals)


def _span(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    return f"{min(vals):.3f}-{max(vals):.3f}" if vals else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20, help="genuine seeds 0..N-1")
    parser.add_argument("--cycled", type=int, default=24, help="cycled-stills seeds")
    parser.add_argument("--holdout", type=int, default=24, help="held-out genuine seeds from 900")
    args = parser.parse_args()
    pipeline = Pipeline.load()
    rows: dict[str, list[tuple[str, MotionReport]]] = defaultdict(list)
    spent = []
    for case, name, frames in cases(args.seeds, args.cycled, args.holdout):
        faces = pipeline._faces(frames, _Timer())
        meshes = [m.points if m is not None else None for m in faces.marks]
        start = time.perf_counter()
        report = motion_report(frames, meshes, [67 * i for i in range(len(frames))])
        spent.append((time.perf_counter() - start) * 1000)
        rows[case].append((name, report))
        print(f"  {case} {name}: {[s.code + ':' + s.severity for s in report.signals]}", flush=True)
    print(f"\n{'case':24s} hack  state_coherence  order_ratio  order_rank   reasons / wrong side")
    for case, found in rows.items():
        attack = not case.startswith(("genuine", "holdout_moving", "holdout_still"))
        reports = [r for _, r in found]
        hacks = sum(_hack(r) for r in reports)
        codes = sorted({s.code + ":" + s.severity for r in reports for s in r.signals})
        wrong = [n for n, r in found if _hack(r) != attack]
        print(
            f"{case:24s} {hacks:2d}/{len(found):<2d}"
            f" {_span([r.state_coherence for r in reports]):16s}"
            f" {_span([r.order_ratio for r in reports]):12s}"
            f" {_span([r.order_rank for r in reports]):12s} {' '.join(codes)}"
            + (f"  WRONG: {', '.join(wrong)}" if wrong else "")
        )
    print(f"motion check median {np.median(spent):.1f} ms per capture")


if __name__ == "__main__":
    main()
