"""The ``antihack`` command line: the root group here, one module per command group.

``processes`` (serve, api, worker, beat, migrate), ``keys`` (keys …, usage), ``submit``,
``attacks``, ``sample`` (make-sample) and ``eval``. Importing this package loads click and the
light modules only; a command imports what it drives (gunicorn, Celery, SQLAlchemy) when it
runs, and ``make-sample`` and ``eval``, whose modules import OpenCV and the pipeline, are loaded
only when named, so ``antihack keys list`` does not pay for them.
"""

from __future__ import annotations

import importlib

import click

from antihack.shared.cli import attacks, keys, processes, submit

# Commands whose modules import OpenCV or the pipeline: name -> (module, attribute, summary).
# `antihack --help` shows the summary without importing the module; tests/test_cli_imports.py
# checks that it is the command's own.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "eval": (
        "antihack.shared.cli.eval",
        "eval_command",
        "Measure APCER, BPCER and ACER on a folder of captures.",
    ),
    "make-sample": (
        "antihack.shared.cli.sample",
        "make_sample",
        "Build a capture file from images or a video.",
    ),
}


class RootGroup(click.Group):
    """A group whose heavy commands are imported when invoked, not when listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, attribute, _ = LAZY_COMMANDS[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's listing, with the lazy commands' summaries taken from LAZY_COMMANDS."""
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS:
                rows.append((name, LAZY_COMMANDS[name][2]))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """antihack: a self-hosted face-liveness anti-hack service."""


for _command in (
    processes.serve,
    processes.api,
    processes.worker,
    processes.beat,
    processes.migrate,
    keys.keys,
    keys.usage,
    submit.submit,
    attacks.attacks,
):
    main.add_command(_command)
