"""``antihack eval``: ISO/IEC 30107-3 metrics, and the command on a small labelled folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from antihack.shared.sdk.sample import build_capture
from antihack.worker.pipeline import eval as ev
from tests.fixtures_images import astronaut, blurred, coffee, jittered
from tests.genuine import genuine_capture


def test_apcer_bpcer_acer_by_hand() -> None:
    scores = {
        "genuine": [0.1, 0.2, 0.3, 0.99],
        "print": [0.5, 0.985, 0.995, 0.999],
        "replay": [0.995, 0.996],
    }
    m = ev.metrics_at(scores, 0.98)
    assert m["bpcer"] == 0.25  # one bona fide of four at or above 0.98
    assert m["apcer"] == {"print": 0.25, "replay": 0.0}
    assert m["apcer_max"] == 0.25
    assert m["acer"] == 0.25
    strict = ev.metrics_at(scores, 0.4)
    assert strict["apcer"] == {"print": 0.0, "replay": 0.0} and strict["bpcer"] == 0.25


def test_threshold_for_a_target_bpcer() -> None:
    genuine = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    t = ev.threshold_for_bpcer(genuine, 0.1)  # one of ten may be refused
    assert 0.9 < t <= 0.9 + 1e-12
    assert ev.bpcer(genuine, t) == 0.1
    assert ev.bpcer(genuine, 0.9) > 0.1  # the next lower candidate refuses two
    assert ev.threshold_for_bpcer(genuine, 0.0) > 0.95
    assert ev.threshold_for_bpcer(genuine, 1.0) == 0.0
    # Floating point: 0.29 * 100 is 28.999..., still 29 allowed.
    many = [i / 100 for i in range(100)]
    assert ev.bpcer(many, ev.threshold_for_bpcer(many, 0.29)) == 0.29


def test_det_points_span_the_corners() -> None:
    points = ev.det_points({"genuine": [0.2, 0.4], "print": [0.3, 0.9]})
    curve = points["print"]
    assert curve[0] == (1.0, 0.0)  # threshold 0: everything is an attack
    assert curve[-1] == (0.0, 1.0)  # above every score: everything passes
    image = ev.draw_det(points, {"t": (0.5, 0.5), "empty class": (math.nan, math.nan)})
    assert image.shape == (640, 640, 3) and image.min() == 0


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pad-set")
    # Live captures (tests/genuine.py), 8 frames: the natural-motion check judges them fully.
    write(root / "genuine" / "a.pb", genuine_capture(9, n=8).SerializeToString())
    write(root / "genuine" / "b.pb", genuine_capture(4, n=8, size=400).SerializeToString())
    write(root / "still" / "a.pb", build_capture([astronaut()] * 3))
    write(root / "print" / "blurred.pb", build_capture(jittered(blurred(astronaut()), 2)))
    write(root / "print" / "broken.pb", b"not a capture")
    write(root / "notes.txt", b"ignored")
    write(root / "other" / "coffee.pb", build_capture(jittered(coffee(), 2)))
    return root


def test_eval_command_writes_report_and_plot(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(ev.eval_cmd, [str(dataset), "-o", str(out), "--target-bpcer", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["counts"] == {"genuine": 2, "other": 1, "print": 2, "still": 1}
    assert report["refused"]["print"] == 1
    seed = report["at_seed_threshold"]
    assert seed["threshold"] == 0.98
    # Genuine astronaut scores below 0.98; the still image is a certain hack (>= 0.99).
    assert seed["bpcer"] == 0.0
    assert seed["apcer"]["still"] == 0.0
    # A blurred photo and a faceless one are not *proven* hacks: they pass at 0.98.
    assert seed["apcer"]["print"] == 1.0 and seed["apcer"]["other"] == 1.0
    assert seed["acer"] == pytest.approx((1.0 + 0.0) / 2)
    target = report["at_target_bpcer"]
    assert target["target_bpcer"] == 0.0 and target["bpcer"] == 0.0
    genuine = [s["score"] for s in report["samples"] if s["label"] == "genuine"]
    assert target["threshold"] > max(genuine)
    refused = [s for s in report["samples"] if s["score"] is None]
    assert [s["path"] for s in refused] == ["print/broken.pb"]
    assert refused[0]["error"].startswith("INVALID_ARGUMENT")
    plot = cv2.imread(str(out.with_suffix(".png")))
    assert plot is not None and plot.shape == (640, 640, 3)
    assert "[6/6]" in result.output  # progress went to stderr (mixed in by CliRunner)
    # Without --with-history the output says what the numbers leave out.
    assert "not checked: freshness" in result.output
    assert "replay (frames or session ids sent before: add --with-history)" in result.output


def test_eval_refuses_a_folder_without_genuine(tmp_path: Path) -> None:
    write(tmp_path / "print" / "a.pb", b"x")
    result = CliRunner().invoke(ev.eval_cmd, [str(tmp_path)])
    assert result.exit_code != 0
    assert "genuine/" in result.output


def test_det_plot_shows_curves_that_coincide() -> None:
    # Two attack types both always caught: identical curves; each must still be seen.
    same = [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    image = ev.draw_det({"print": same, "replay": same}, {})
    for colour in ev.PALETTE[:2]:
        hits = np.all(image == np.array(colour, dtype=np.uint8), axis=2).sum()
        assert hits > 1000, colour  # its legend marker and label alone give ~240
