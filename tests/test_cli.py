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
        "--permissions", "jobs,liveness_anti_hack", "--webhook-url", "https://example.com/hook",
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
