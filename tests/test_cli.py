"""The ``antihack keys`` commands against the real database, and the forms scripts rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from click.testing import CliRunner

from shared.cli import main
from shared.settings import Settings


def run(settings: Settings, *args: str) -> Any:
    result = CliRunner(env=settings.to_env()).invoke(main, list(args), catch_exceptions=False)
    return result


def test_keys_create_show_update_rotate_revoke(base_settings: Settings) -> None:
    created = run(
        base_settings, "keys", "create", "--name", "acme",
        "--quota", "100", "--quota-period", "day", "--rate", "5", "--burst", "10",
        "--expires-at", "2031-01-01T00:00:00+00:00",
        "--permissions", "jobs,liveness_anti_hack", "--webhook-url", "http://127.0.0.1:9/hook",
        "--require-signed", "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    key = json.loads(created.output)
    assert {"api_id", "api_secret", "webhook_secret", "sdk_secret"} <= set(key)
    assert key["webhook_secret"].startswith("whsec_")
    assert key["quota"] == 100 and key["quota_period"] == "day" and key["require_signed"] is True
    assert key["permissions"] == ["jobs", "liveness_anti_hack"]

    shown = json.loads(run(base_settings, "keys", "show", key["api_id"], "--json").output)
    assert "api_secret" not in shown and shown["rate"] == 5.0

    updated = run(base_settings, "keys", "update", key["api_id"], "--quota", "7", "--json")
    assert json.loads(updated.output)["quota"] == 7

    rotated = json.loads(run(base_settings, "keys", "rotate", key["api_id"], "--json").output)
    assert rotated["api_secret"] != key["api_secret"]

    listed = json.loads(run(base_settings, "keys", "list", "--json").output)
    assert key["api_id"] in {k["api_id"] for k in listed}

    revoked = json.loads(run(base_settings, "keys", "revoke", key["api_id"], "--json").output)
    assert revoked["revoked"] is True


def test_keys_errors_are_messages_not_tracebacks(base_settings: Settings) -> None:
    missing = run(base_settings, "keys", "show", "ak_nope")
    assert missing.exit_code == 1 and "no API key" in missing.output
    bad_date = run(base_settings, "keys", "create", "--name", "x", "--expires-at", "tomorrow")
    assert bad_date.exit_code == 2 and "ISO 8601" in bad_date.output
    naive = run(base_settings, "keys", "create", "--name", "x", "--expires-at", "2030-01-01T00:00")
    assert naive.exit_code == 2 and "time zone" in naive.output


def test_table_output_lists_keys(base_settings: Settings) -> None:
    run(base_settings, "keys", "create", "--name", "table-me")
    out = run(base_settings, "keys", "list").output
    assert "API ID" in out and "table-me" in out


def test_make_sample_refuses_an_image_beyond_the_decoder_cap(
    base_settings: Settings, tmp_path: Path
) -> None:
    # 72 Mpx of black compress to a small PNG; OpenCV is capped at 8192^2 px on `import shared`.
    big = tmp_path / "big.png"
    assert cv2.imwrite(str(big), np.zeros((8000, 9000, 3), np.uint8))
    result = run(base_settings, "make-sample", str(big), "-o", str(tmp_path / "o.pb"))
    assert result.exit_code == 2
    assert "cannot be read" in result.output and "OPENCV_IO_MAX_IMAGE_PIXELS" in result.output
    assert not (tmp_path / "o.pb").exists()


def test_keys_create_human_output_has_no_python_reprs(base_settings: Settings) -> None:
    out = run(base_settings, "keys", "create", "--name", "plain", "--permissions", "jobs").output
    assert "None" not in out and "[" not in out and "True" not in out and "False" not in out
    assert "permissions" in out and "jobs" in out


def test_help_shows_whole_summaries_and_the_webhook_dispatcher(base_settings: Settings) -> None:
    listing = run(base_settings, "--help").output
    commands = listing.split("Commands:")[1]
    assert "..." not in commands and "Show quota use and per-day counts." in commands
    assert "webhook dispatcher" in run(base_settings, "beat", "--help").output


def test_submit_without_a_key_names_the_environment_variable(
    base_settings: Settings, tmp_path: Path
) -> None:
    capture = tmp_path / "c.pb"
    capture.write_bytes(b"x")
    env = {k: v for k, v in base_settings.to_env().items() if not k.startswith("ANTIHACK_API_")}
    env |= {"ANTIHACK_API_ID": None, "ANTIHACK_API_SECRET": None}  # type: ignore[dict-item]
    result = CliRunner(env=env).invoke(main, ["submit", str(capture)])
    assert result.exit_code == 2
    assert "--api-id" in result.output and "ANTIHACK_API_ID" in result.output


def test_quickstart_sample_is_fresh_and_parses(tmp_path: Path) -> None:
    import time

    from shared.capture import CaptureLimits, parse_capture
    from shared.quickstart import SAMPLE_FILE, quickstart_text, write_fresh_sample

    first = write_fresh_sample(tmp_path)
    assert first == tmp_path / SAMPLE_FILE
    capture = parse_capture(first.read_bytes(), CaptureLimits())
    now_ms = time.time() * 1000
    assert len(capture.frames) >= 8
    assert all(abs(now_ms - f.timestamp_ms) < 60_000 for f in capture.frames)
    images = {f.image for f in capture.frames}
    assert len(images) == len(capture.frames)  # no frame repeated
    text = quickstart_text("http://127.0.0.1:8000", "ak_1", "s3cret", first)
    assert "export API_ID=ak_1 API_SECRET=s3cret" in text
    assert f"liveness_data_file=@{first}" in text and "replay" in text
    again = parse_capture(write_fresh_sample(tmp_path).read_bytes(), CaptureLimits())  # type: ignore[union-attr]
    assert again.session_id != capture.session_id
    assert {f.image for f in again.frames}.isdisjoint(images)
