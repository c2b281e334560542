"""The CLI loads what a command needs: no OpenCV, onnxruntime, Celery or Flask to manage keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from antihack.shared.cli import LAZY_COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("cv2", "onnxruntime", "celery", "flask", "gunicorn", "antihack.api", "antihack.worker")
# Run in a fresh interpreter: this test process has imported everything already.
PROBE = """
import json, sys
from antihack.shared.cli import main
args = json.loads(sys.argv[1])
if args:
    try:
        main(args, prog_name="antihack")
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)), file=sys.stderr)
"""


def loaded_after(args: list[str]) -> list[str]:
    """The heavy modules in sys.modules after importing the CLI and running ``args``."""
    probe = PROBE.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "args", [[], ["--help"], ["keys", "list", "--help"], ["usage", "--help"], ["worker", "--help"]]
)
def test_the_cli_imports_no_heavy_module(args: list[str]) -> None:
    assert loaded_after(args) == []


def test_a_lazy_command_loads_when_named() -> None:
    # The probe itself can fail: naming eval must load the pipeline (and so OpenCV).
    assert {"cv2", "antihack.worker"} <= set(loaded_after(["eval", "--help"]))


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_lazy_summaries_are_the_commands_own(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.name == name
    assert command.get_short_help_str(limit=1000) == LAZY_COMMANDS[name][2]


def test_python_m_shared_cli_is_the_antihack_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "antihack.shared.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for name in ("serve", "keys", "make-sample", "eval", "attacks", "usage"):
        assert f"  {name} " in done.stdout, name
