"""``antihack eval DIR``: presentation-attack detection metrics (ISO/IEC 30107-3) on a folder.

DIR holds ``genuine/`` (bona fide captures) and one folder per attack type (``print/``,
``replay/``, ...) of capture files. A presentation is classified an attack when its score is
>= the threshold. APCER (per attack type) = attacks classified bona fide; BPCER = bona fide
presentations classified attacks; ACER = (max APCER + BPCER) / 2.

It also calibrates the PAD model for ``ANTIHACK_PAD_HACK_BELOW``: the largest live_proba
threshold t such that at most ``--target-bpcer`` of the genuine captures (with a face) have
live_proba < t, and the share of each attack type with live_proba >= t (PAD APCER at t).

``--with-history`` adds the cross-request checks: the genuine captures are analysed in order,
each against the replay history of those before it (as the API would see them), then every
attack capture is analysed against the history of all genuine captures (not of each other, so
results do not depend on file order).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.shared.domain.capture import CaptureError, CaptureLimits, parse_capture
from antihack.shared.proto import liveness_pb2 as pb

if TYPE_CHECKING:
    from antihack.worker.pipeline.run import Analysis, PipelineContext

GENUINE = "genuine"
SEED_THRESHOLD = 0.98
CAPTURE_SUFFIXES = (".pb", ".bin")
# Colours (BGR) of the attack-type curves, cycled.
PALETTE = ((40, 40, 220), (40, 160, 40), (200, 120, 20), (160, 40, 160), (20, 160, 200))
# Each curve also gets its own marker and is drawn OFFSET_PX further right and up than the one
# before, so curves that coincide (e.g. two attack types all caught) stay visible side by side.
MARKERS = (
    cv2.MARKER_SQUARE,
    cv2.MARKER_TRIANGLE_UP,
    cv2.MARKER_DIAMOND,
    cv2.MARKER_CROSS,
    cv2.MARKER_TILTED_CROSS,
    cv2.MARKER_STAR,
)
OFFSET_PX = 4
# What the figures leave out (printed at the end): eval never judges a capture's age.
NOT_FRESHNESS = "freshness (capture age: each capture is judged as if just recorded)"
NOT_REPLAY = "replay (frames or session ids sent before: add --with-history)"


@dataclass
class SampleResult:
    """One capture's outcome; ``score`` is None when the capture was refused."""

    path: str
    label: str
    score: float | None
    reasons: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    # extra.live_proba; None when refused or no face (the PAD model did not run).
    live_proba: float | None = None


def find_captures(root: Path) -> dict[str, list[Path]]:
    """Capture files per label (folder name); raise click.UsageError on an unusable layout."""
    if not (root / GENUINE).is_dir():
        raise click.UsageError(f"{root} has no {GENUINE}/ folder")
    labels: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in CAPTURE_SUFFIXES)
        if files:
            labels[folder.name] = files
    if GENUINE not in labels or len(labels) < 2:
        raise click.UsageError(
            f"{root} needs capture files (*.pb) in {GENUINE}/ and in at least one attack folder"
        )
    return labels


def bpcer(genuine: Sequence[float], threshold: float) -> float:
    """Share of bona fide scores classified as attacks (score >= threshold)."""
    return sum(s >= threshold for s in genuine) / len(genuine) if genuine else math.nan


def apcer(attacks: Sequence[float], threshold: float) -> float:
    """Share of attack scores classified as bona fide (score < threshold)."""
    return sum(s < threshold for s in attacks) / len(attacks) if attacks else math.nan


def metrics_at(scores: Mapping[str, Sequence[float]], threshold: float) -> dict[str, Any]:
    """APCER per attack type, its maximum, BPCER and ACER at one threshold."""
    per_type = {
        label: apcer(values, threshold) for label, values in scores.items() if label != GENUINE
    }
    known = [v for v in per_type.values() if not math.isnan(v)]
    worst = max(known) if known else math.nan
    b = bpcer(scores.get(GENUINE, []), threshold)
    return {
        "threshold": threshold,
        "apcer": per_type,
        "apcer_max": worst,
        "bpcer": b,
        "acer": (worst + b) / 2,
    }


def threshold_for_bpcer(genuine: Sequence[float], target: float) -> float:
    """The lowest threshold whose BPCER is <= ``target`` (lowest, so APCER is smallest)."""
    if not genuine:
        raise ValueError("no bona fide scores")
    ranked = sorted(genuine, reverse=True)
    # At most this many bona fide presentations may score >= the threshold; 1e-9 keeps
    # 0.29 * 100 from flooring to 28.
    allowed = math.floor(target * len(ranked) + 1e-9)
    if allowed >= len(ranked):
        return 0.0
    return float(np.nextafter(ranked[allowed], np.inf))


def pad_threshold_for_bpcer(genuine_live: Sequence[float], target: float) -> float:
    """The largest t with share(genuine live_proba < t) <= ``target`` (ANTIHACK_PAD_HACK_BELOW).

    With the genuine values sorted, at most k = floor(target n) may lie below t, so t is the
    (k+1)-th smallest: nothing above it keeps that count. 1.0 when every one may be refused.
    """
    if not genuine_live:
        raise ValueError("no bona fide live_proba values")
    ranked = sorted(genuine_live)
    allowed = math.floor(target * len(ranked) + 1e-9)
    return 1.0 if allowed >= len(ranked) else float(ranked[allowed])


def pad_calibration(live: Mapping[str, Sequence[float]], target: float) -> dict[str, Any]:
    """PAD-only operating point at the calibrated threshold: BPCER and APCER per attack type."""
    t = pad_threshold_for_bpcer(live[GENUINE], target)
    genuine = live[GENUINE]
    per_type = {
        label: (sum(v >= t for v in values) / len(values) if values else math.nan)
        for label, values in live.items()
        if label != GENUINE
    }
    known = [v for v in per_type.values() if not math.isnan(v)]
    return {
        "target_bpcer": target,
        "pad_hack_below": t,
        "bpcer": sum(v < t for v in genuine) / len(genuine),
        "apcer": per_type,
        "apcer_max": max(known) if known else math.nan,
        "genuine_with_face": len(genuine),
    }


def det_points(
    scores: Mapping[str, Sequence[float]],
) -> dict[str, list[tuple[float, float]]]:
    """(BPCER, APCER) per attack type over every distinct score used as threshold."""
    every = sorted({s for values in scores.values() for s in values})
    thresholds = [0.0, *every, float(np.nextafter(max(every, default=1.0), np.inf))]
    genuine = scores.get(GENUINE, [])
    return {
        label: [(bpcer(genuine, t), apcer(values, t)) for t in thresholds]
        for label, values in scores.items()
        if label != GENUINE and values
    }


def draw_det(
    points: Mapping[str, Sequence[tuple[float, float]]],
    marks: Mapping[str, tuple[float, float]],
    size: int = 640,
) -> NDArray[np.uint8]:
    """A DET plot (APCER against BPCER, linear axes) as a BGR image, drawn with OpenCV."""
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    margin = 60
    span = size - 2 * margin

    def to_px(x: float, y: float) -> tuple[int, int]:
        return (margin + round(x * span), size - margin - round(y * span))

    for tick in np.linspace(0, 1, 6):
        cv2.line(image, to_px(tick, 0), to_px(tick, 1), (225, 225, 225), 1)
        cv2.line(image, to_px(0, tick), to_px(1, tick), (225, 225, 225), 1)
        x, y = to_px(tick, 0)
        cv2.putText(image, f"{tick:.1f}", (x - 12, y + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
        x, y = to_px(0, tick)
        cv2.putText(image, f"{tick:.1f}", (x - 40, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
    cv2.rectangle(image, to_px(0, 1), to_px(1, 0), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, "BPCER", (size // 2 - 25, size - 15), font, 0.5, (0, 0, 0), 1)
    cv2.putText(image, "APCER", (5, 30), font, 0.5, (0, 0, 0), 1)
    cv2.putText(image, "DET (linear axes)", (size // 2 - 70, 30), font, 0.55, (0, 0, 0), 1)
    for index, (label, curve) in enumerate(sorted(points.items())):
        colour = PALETTE[index % len(PALETTE)]
        marker = MARKERS[index % len(MARKERS)]
        shift = np.array([OFFSET_PX * index, -OFFSET_PX * index], dtype=np.int32)
        pixels = np.array([to_px(x, y) for x, y in curve], dtype=np.int32) + shift
        cv2.polylines(image, [pixels], False, colour, 2, lineType=cv2.LINE_AA)
        for px, py in np.unique(pixels, axis=0):
            cv2.drawMarker(image, (int(px), int(py)), colour, marker, 10, 2, cv2.LINE_AA)
        legend_y = margin + 20 * index + 15
        cv2.drawMarker(image, (size - margin - 145, legend_y - 4), colour, marker, 10, 2)
        cv2.putText(
            image,
            label,
            (size - margin - 130, legend_y),
            font,
            0.5,
            colour,
            1,
            lineType=cv2.LINE_AA,
        )
    for index, (name, (mark_x, mark_y)) in enumerate(marks.items()):
        if math.isnan(mark_x) or math.isnan(mark_y):  # a class with no analysed capture
            continue
        cv2.circle(image, to_px(mark_x, mark_y), 5, (0, 0, 0), -1, lineType=cv2.LINE_AA)
        cv2.putText(
            image,
            name,
            (margin + 10, size - margin - 20 - 18 * index),
            font,
            0.45,
            (0, 0, 0),
            1,
            lineType=cv2.LINE_AA,
        )
    return image


def context_for(
    capture: pb.Capture,
    limits: CaptureLimits,
    secret: bytes | None,
    pad_hack_below: float = 0.0,
) -> PipelineContext:
    """A pipeline context judging the capture as if submitted right after it was recorded.

    Eval measures attack detection, not freshness: a dataset recorded last month would
    otherwise be all 'too old', and replay history would make results depend on file order.
    """
    from antihack.worker.pipeline.run import (
        PipelineContext,  # onnxruntime loads only when evaluating
    )

    stamps = [f.timestamp_ms for f in capture.frames if f.timestamp_ms]
    latest = max([*stamps, capture.started_at_ms])
    now_ms = latest + 1000 if latest else int(time.time() * 1000)
    return PipelineContext.fresh(
        now_ms,
        require_signed=secret is not None,
        sdk_secret=secret,
        limits=limits,
        pad_hack_below=pad_hack_below,
    )


class EvalHistory:
    """The replay history ``--with-history`` builds from the genuine captures, in memory.

    The worker's check against a deployment's stored fingerprints (``replay.MemoryHistory``,
    deployment scope: every capture is compared with every earlier one), plus their session ids.
    """

    def __init__(self) -> None:
        from antihack.worker.pipeline.replay import MemoryHistory

        self.session_ids: set[str] = set()
        self.memory = MemoryHistory()

    def context(self, ctx: PipelineContext) -> PipelineContext:
        """``ctx`` with this history as the deployment's earlier submissions."""
        return replace(ctx, seen_session_ids=frozenset(self.session_ids), history=self.memory)

    def add(self, name: str, analysis: Analysis) -> None:
        """Remember an analysed capture (``name`` identifies it in the history)."""
        if analysis.session_id:
            self.session_ids.add(analysis.session_id)
        self.memory.add(name, "eval", analysis.frame_prints)


class _Progress:
    """A progress bar on a terminal; one line per capture otherwise (logs, CI)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.stream = sys.stderr
        self.bar: Any = None
        if self.stream.isatty():
            self.bar = click.progressbar(length=total, label="evaluating", file=self.stream)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def advance(self, line: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        else:
            click.echo(f"[{self.done}/{self.total}] {line}", err=True)


def _json_safe(value: Any) -> Any:
    """NaN (an empty class) is not JSON; write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@click.command("eval")
@click.argument(
    "root", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.json"),
    show_default=True,
    help="JSON report to write.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DET plot PNG to write (default: the report's name with .png).",
)
@click.option(
    "--target-bpcer",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Also report the metrics at the lowest threshold meeting this BPCER, and the "
    "ANTIHACK_PAD_HACK_BELOW value meeting it.",
)
@click.option(
    "--pad-hack-below",
    type=click.FloatRange(0, 1),
    default=0.0,
    envvar="ANTIHACK_PAD_HACK_BELOW",
    show_default=True,
    help="Judge as a worker with this ANTIHACK_PAD_HACK_BELOW (0: off).",
)
@click.option(
    "--with-history",
    is_flag=True,
    help="Cross-request checks: judge each capture against the genuine ones' replay history.",
)
@click.option("--sign-secret", help="SDK secret: verify signatures as a key requiring them.")
@click.option(
    "--models",
    "model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model folder (default: the installed models).",
)
@click.option("--providers", help="onnxruntime execution providers, comma-separated.")
def eval_cmd(
    root: Path,
    output: Path,
    plot: Path | None,
    target_bpcer: float,
    pad_hack_below: float,
    with_history: bool,
    sign_secret: str | None,
    model_dir: Path | None,
    providers: str | None,
) -> None:
    """Measure APCER, BPCER and ACER on a folder of captures.

    Run the pipeline on DIR/genuine and DIR/<attack type>/*.pb; report APCER, BPCER, ACER.
    Freshness (capture age) is never checked; replay only with --with-history.
    """
    from antihack.worker.pipeline.run import Pipeline

    labels = find_captures(root)
    total = sum(len(files) for files in labels.values())
    click.echo(f"loading models; {total} captures in {len(labels)} folders", err=True)
    pipeline = Pipeline.load(model_dir, providers.split(",") if providers else None)
    limits = CaptureLimits()
    secret = sign_secret.encode() if sign_secret is not None else None
    history = EvalHistory() if with_history else None
    results: list[SampleResult] = []
    # Genuine first: with history, attacks are judged against every genuine capture.
    order = [(GENUINE, path) for path in labels[GENUINE]] + [
        (label, path) for label, files in labels.items() if label != GENUINE for path in files
    ]
    with _Progress(total) as progress:
        for label, path in order:
            started = time.perf_counter()
            result = SampleResult(path=str(path.relative_to(root)), label=label, score=None)
            try:
                capture = parse_capture(path.read_bytes(), limits)
                ctx = context_for(capture, limits, secret, pad_hack_below)
                if history is not None:
                    ctx = history.context(ctx)
                analysis = pipeline.analyze(capture, ctx)
                result.score, result.reasons = analysis.score, analysis.reasons
                if not analysis.extra["has_no_face"]:
                    result.live_proba = float(analysis.extra["live_proba"])
                if history is not None and label == GENUINE:
                    history.add(result.path, analysis)
            except CaptureError as exc:
                result.error = f"{exc.status}: {exc.reason}"
            result.seconds = round(time.perf_counter() - started, 3)
            results.append(result)
            shown = "refused" if result.score is None else f"{result.score:.5f}"
            progress.advance(f"{result.path}: {shown}")
    scores = {
        label: [r.score for r in results if r.label == label and r.score is not None]
        for label in labels
    }
    if not scores[GENUINE]:
        raise click.ClickException("no genuine capture could be analysed")
    tuned = threshold_for_bpcer(scores[GENUINE], target_bpcer)
    live = {
        label: [r.live_proba for r in results if r.label == label and r.live_proba is not None]
        for label in labels
    }
    pad = pad_calibration(live, target_bpcer) if live[GENUINE] else None
    at_seed, at_target = metrics_at(scores, SEED_THRESHOLD), metrics_at(scores, tuned)
    report = {
        "root": str(root),
        "counts": {label: len(files) for label, files in labels.items()},
        "refused": {
            label: sum(r.label == label and r.score is None for r in results) for label in labels
        },
        "at_seed_threshold": at_seed,
        "at_target_bpcer": {"target_bpcer": target_bpcer, **at_target},
        "pad_calibration": pad,
        "with_history": with_history,
        "pad_hack_below": pad_hack_below,
        "model_versions": pipeline.models.versions,
        "samples": [asdict(r) for r in results],
    }
    output.write_text(json.dumps(_json_safe(report), indent=2) + "\n", encoding="utf-8")
    plot_path = plot or output.with_suffix(".png")
    marks = {
        f"t={SEED_THRESHOLD}": (at_seed["bpcer"], at_seed["apcer_max"]),
        f"t={tuned:.4f} (BPCER<={target_bpcer})": (at_target["bpcer"], at_target["apcer_max"]),
    }
    cv2.imwrite(str(plot_path), draw_det(det_points(scores), marks))
    click.echo(
        f"at {SEED_THRESHOLD}: APCER {at_seed['apcer_max']:.4f} BPCER {at_seed['bpcer']:.4f} "
        f"ACER {at_seed['acer']:.4f}; at {tuned:.5f}: APCER {at_target['apcer_max']:.4f} "
        f"BPCER {at_target['bpcer']:.4f} ACER {at_target['acer']:.4f}",
        err=True,
    )
    if pad is None:
        click.echo("PAD calibration: no genuine capture with a face", err=True)
    else:
        click.echo(
            f"PAD calibration: ANTIHACK_PAD_HACK_BELOW={pad['pad_hack_below']:.6f} meets BPCER "
            f"<= {target_bpcer} (measured {pad['bpcer']:.4f} on {pad['genuine_with_face']} "
            f"genuine); PAD APCER there {pad['apcer_max']:.4f} (worst type)",
            err=True,
        )
    left_out = [NOT_FRESHNESS] if with_history else [NOT_FRESHNESS, NOT_REPLAY]
    click.echo(f"not checked: {' and '.join(left_out)}", err=True)
    click.echo(f"wrote {output} and {plot_path}", err=True)
