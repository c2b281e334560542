"""Write genuine captures made by ``tests/genuine.py`` into a folder, for ``antihack attacks make``.

``python -m bench.make_genuine OUT [--moving 6] [--still 6] [--size 384] [--frames 16]`` writes
``g<seed>.pb`` (moving people, seeds from 501) and ``g<seed>_still.pb`` (people sitting very
still), timestamped now, 2 s apart: the genuine set of the README's issue-13 goal table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tests.genuine import genuine_capture


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.make_genuine", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--moving", type=int, default=6)
    parser.add_argument("--still", type=int, default=6)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=501)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    now = int(time.time() * 1000)
    for i in range(args.moving + args.still):
        seed, still = args.first_seed + i, i >= args.moving
        capture = genuine_capture(
            seed, n=args.frames, still=still, size=args.size, now_ms=now - 60_000 + i * 2000
        )
        name = f"g{seed}{'_still' if still else ''}.pb"
        (args.out / name).write_bytes(capture.SerializeToString())
        print(f"[{i + 1}/{args.moving + args.still}] {name}", flush=True)


if __name__ == "__main__":
    main()
