"""``antihack eval``: the pipeline's metrics command (``worker/pipeline/eval.py``) with ``--json``.

It imports OpenCV and the pipeline at load time: the root group loads this module only when the
command runs. The command itself, its options and its report live beside the code they measure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from antihack.shared.cli.output import emit_json
from antihack.worker.pipeline.eval import eval_cmd


def _run(as_json: bool, **kw: Any) -> None:
    assert eval_cmd.callback is not None
    eval_cmd.callback(**kw)
    if as_json:
        output: Path = kw["output"]
        report = json.loads(output.read_text(encoding="utf-8"))
        report.pop("samples")  # per capture: in the report file, not the summary
        plot = kw["plot"] or output.with_suffix(".png")
        emit_json({**report, "report": str(output), "plot": str(plot)})


eval_command = click.Command(
    "eval",
    callback=_run,
    params=[
        *eval_cmd.params,
        click.Option(
            ["--json", "as_json"],
            is_flag=True,
            help="Print the report's summary (all but the per-capture samples) as one JSON "
            "object on stdout.",
        ),
    ],
    help=eval_cmd.help,
    short_help=eval_cmd.short_help,
)
