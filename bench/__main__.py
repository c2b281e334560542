"""``python -m bench [NAME...]``: run the named benchmarks (default: all)."""

from __future__ import annotations

import importlib
import sys

BENCHES = [
    "bench_submit",
    "bench_intake",
    "bench_queue",
    "bench_burst",
    "bench_quota",
    "bench_models",
    "bench_pipeline",
    "bench_fas",
    "bench_batching",
    "bench_replay",
    "bench_sweep",
    "bench_motion",
    "bench_light",
]
# Not in the default run (minutes each): bench_challenges (renders sessions and a recording
# attacker; `--only blink|flat` for one part). Run it by name.


def main(argv: list[str]) -> None:
    names = argv or BENCHES
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== {name} ===", flush=True)
        sys.argv = [f"bench.{name}"]  # each bench parses its own options: run with defaults
        module.main()


if __name__ == "__main__":
    main(sys.argv[1:])
