"""``python -m bench [NAME...]``: run the named benchmarks (default: all)."""

from __future__ import annotations

import importlib
import sys

BENCHES = [
    "bench_submit",
    "bench_queue",
    "bench_burst",
    "bench_quota",
    "bench_models",
    "bench_pipeline",
    "bench_fas",
    "bench_batching",
    "bench_replay",
    "bench_sweep",
]


def main(argv: list[str]) -> None:
    names = argv or BENCHES
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== {name} ===", flush=True)
        module.main()


if __name__ == "__main__":
    main(sys.argv[1:])
