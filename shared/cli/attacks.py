"""``antihack attacks``: build labelled attack captures from an operator's genuine captures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from antihack.shared.cli.common import json_option
from antihack.shared.cli.output import emit_json, table

GENUINE = "genuine"  # the bona fide folder `antihack eval` reads
MANIFEST = "attacks.json"


def _attack_names(value: str | None) -> list[str]:
    from antihack.shared.sdk.attacks import ATTACKS

    if not value:
        return list(ATTACKS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown {', '.join(unknown) or 'empty list'}; known: {', '.join(ATTACKS)}",
            param_hint="--attacks",
        )
    return list(dict.fromkeys(names))


@click.group("attacks")
def attacks() -> None:
    """Build attack captures from your genuine ones.

    Attack captures for measuring detection on your own data (see `antihack eval`).
    """


@attacks.command("list")
@json_option("Print one JSON array of {name, model} objects.")
def list_attacks(as_json: bool) -> None:
    """Name and physical model of every attack."""
    from antihack.shared.sdk.attacks import ATTACKS

    rows = [
        {"name": name, "model": " ".join((fn.__doc__ or "").split())}
        for name, fn in ATTACKS.items()
    ]
    if as_json:
        emit_json(rows)
    else:
        table(("ATTACK", "MODEL"), ([r["name"], r["model"]] for r in rows))


@attacks.command("make")
@click.argument(
    "genuine_dir",
    metavar="GENUINE_DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write: genuine/ (copies) and one folder per attack, as `antihack eval` reads.",
)
@click.option("--attacks", "names", help="Comma-separated attacks (default: all; see `list`).")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same files.")
@json_option("Print the summary as one JSON object on stdout.")
def make(genuine_dir: Path, out_dir: Path, names: str | None, seed: int, as_json: bool) -> None:
    """Make one attack capture per genuine capture (*.pb in GENUINE_DIR) and attack.

    Attack captures are unsigned and carry new ``session_id``s (replays too: only the frames can
    give a replay away). OUT_DIR/attacks.json records each file's source and drawn parameters.
    """
    from antihack.shared.domain.capture import (
        CaptureError,
        CaptureLimits,
        decode_frames,
        parse_capture,
    )
    from antihack.shared.sdk.attacks import attack_rng, make_attack
    from antihack.shared.sdk.submit import _progress

    chosen = _attack_names(names)
    files = sorted(p for p in genuine_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".pb")
    if not files:
        raise click.UsageError(f"{genuine_dir} holds no capture files (*.pb)")
    if out_dir.resolve() == genuine_dir.resolve():
        raise click.UsageError("the output folder must differ from GENUINE_DIR")
    limits = CaptureLimits()
    manifest: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    counts = {name: 0 for name in chosen}
    genuine_out = out_dir / GENUINE
    with _progress(len(files) * len(chosen), "attacks") as bar:
        for path in files:
            relative = path.relative_to(genuine_dir)
            try:
                source = parse_capture(path.read_bytes(), limits)
                frames = decode_frames(source, limits)
            except CaptureError as exc:
                skipped[str(relative)] = f"{exc.status}: {exc.reason}"
                bar.update(len(chosen))
                continue
            target = genuine_out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            for name in chosen:
                rng = attack_rng(seed, relative.as_posix(), name)
                capture, params = make_attack(source, frames, name, rng)
                data = capture.SerializeToString(deterministic=True)
                try:
                    parse_capture(data, limits)  # what the kit writes, the API accepts
                except CaptureError as exc:
                    skipped[f"{name}/{relative}"] = f"{exc.status}: {exc.reason}"
                    bar.update(1)
                    continue
                out = out_dir / name / relative
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                counts[name] += 1
                manifest.append(
                    {
                        "file": (Path(name) / relative).as_posix(),
                        "attack": name,
                        "source": (Path(GENUINE) / relative).as_posix(),
                        "session_id": capture.session_id,
                        "params": params,
                    }
                )
                bar.update(1)
    genuine_count = sum(1 for p in files if str(p.relative_to(genuine_dir)) not in skipped)
    if genuine_count == 0:
        raise click.UsageError(f"no capture in {genuine_dir} could be read: {skipped}")
    summary = {
        "output": str(out_dir),
        "seed": seed,
        "genuine": genuine_count,
        "attacks": counts,
        "skipped": skipped,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).write_text(
        json.dumps({**summary, "files": manifest}, indent=2, default=_plain) + "\n",
        encoding="utf-8",
    )
    if as_json:
        emit_json(summary)
    else:
        total = sum(counts.values())
        click.echo(f"wrote {genuine_count} genuine and {total} attack captures to {out_dir}")
        table(("ATTACK", "CAPTURES"), counts.items(), right={"CAPTURES"}, indent=2)
        for path_name, why in skipped.items():
            click.echo(f"skipped {path_name}: {why}", err=True)


def _plain(value: object) -> object:
    """numpy scalars in the parameters become plain numbers."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
