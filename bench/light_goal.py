"""The light challenge against its goals: the real pipeline on ``tests/light_physics.py`` captures.

``python -m bench.light_goal [SEEDS]`` (default 6): for each seed, a live person (moving for even
seeds, sitting still for odd ones) lit by the screen at five ambient levels, and the four attacks
(no response, uniform response, wrong order, late); prints each case's correlation and
face/background ratio ranges and how many were flagged at 0.98.
"""

from __future__ import annotations

import sys

import antihack.worker.pipeline.run as run
from antihack.worker.pipeline.fusion import HACK_THRESHOLD
from antihack.worker.pipeline.light import LightReport
from tests import light_physics as lp
from tests import test_light as tl


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    seeds = int(args[0]) if args else 6
    seen: list[LightReport] = []
    real = run.light_report  # type: ignore[attr-defined]

    def record(*a: object, **k: object) -> LightReport:  # keep the report the pipeline made
        report = real(*a, **k)  # type: ignore[arg-type]
        seen.append(report)
        return report

    run.light_report = record  # type: ignore[attr-defined]
    pipeline = run.Pipeline.load()
    rows: dict[str, list[tuple[float, float, bool]]] = {}
    for seed in range(seeds):
        cases = [(f"genuine {n}", s) for n, s in lp.scenes(seed)] + list(lp.attacks(seed, 6))
        for name, scene in cases:
            analysis = tl.analyze(pipeline, scene, seed, lp.sequence_for(seed))
            report = seen[-1]
            flagged = analysis.score >= HACK_THRESHOLD
            rows.setdefault(name, []).append((report.correlation, report.face_ratio, flagged))
            print(seed, name, round(report.correlation, 3), analysis.reasons, flush=True)
        tl._PEOPLE.clear()
    print("| case | correlation min–max | face/background | flagged at 0.98 |")
    for name, values in rows.items():
        corr = [v[0] for v in values]
        ratio = [v[1] for v in values]
        print(
            f"| {name} | {min(corr):.3f}–{max(corr):.3f} | {min(ratio):.2f}–{max(ratio):.2f} "
            f"| {sum(v[2] for v in values)}/{len(values)} |"
        )


if __name__ == "__main__":
    main()
