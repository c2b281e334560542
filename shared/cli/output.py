"""How commands print data: ``--json`` for scripts, aligned tables for people.

With ``--json`` a command writes exactly one JSON document on stdout (progress and notes go to
stderr). Otherwise rows become a table drawn by rich: columns in a fixed order, values as a
person reads them (``-`` for none, ``yes``/``no``, lists joined by commas), colour only on a
terminal and never a wrapped or cut cell (secrets and ids stay copyable; a long line wraps in
the terminal instead).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import click

# Tables are laid out at their natural width: no real table is this wide, so nothing is folded.
NATURAL_WIDTH = 10_000


def emit_json(data: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(data, indent=2))


def human(value: Any) -> str:
    """A value as a person reads it: no Python ``None``, ``True`` or list reprs."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Collection[str] = (),
    header: bool = True,
    indent: int = 0,
) -> None:
    """Print ``rows`` as columns aligned under ``columns``; those in ``right`` right-aligned."""
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, show_header=header, pad_edge=False, header_style="bold")
    for name in columns:
        grid.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    for row in rows:
        # Text, not str: a value such as "[red]" is shown as written, not read as rich markup.
        grid.add_row(*(Text(human(value)) for value in row))
    _print(Padding(grid, (0, 0, 0, indent)) if indent else grid)


def record(data: Mapping[str, Any]) -> None:
    """Print one record as aligned ``field  value`` lines."""
    table(("field", "value"), data.items(), header=False)


def _print(renderable: Any) -> None:
    from rich.console import Console

    tty = sys.stdout.isatty()
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=NATURAL_WIDTH,
        force_terminal=tty,  # colour (bold headers) on a terminal, unless NO_COLOR is set
        color_system="auto" if tty else None,
        markup=False,
        emoji=False,
        highlight=False,
    )
    console.print(renderable)
    # rich pads every line to the table's width: the trailing blanks help no reader or script.
    click.echo("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))
