"""The ``antihack keys`` commands against the real database, and the forms scripts rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from click.testing import CliRunner

from antihack.shared.cli import main
from antihack.shared.infra.settings import Settings


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
    run(base_settings, "keys", "create", "--name", "a-much-longer-key-name", "--quota", "12345")
    out = run(base_settings, "keys", "list").output
    assert "\x1b" not in out  # no colour codes without a terminal
    header, *rows = out.splitlines()
    titles = ["API ID", "NAME", "QUOTA", "PERIOD", "RATE", "BURST", "EXPIRES", "STATE"]
    assert [header.index(t) for t in titles] == sorted(header.index(t) for t in titles)
    short = next(r for r in rows if "table-me" in r)
    long = next(r for r in rows if "a-much-longer-key-name" in r)
    # Aligned: every row's name starts under NAME, its state ends under STATE's last letter.
    assert short.index("table-me") == long.index("a-much-longer-key-name") == header.index("NAME")
    assert short.endswith("active") and len(short) == len(long)
    # Numbers are right-aligned: the quota ends where the QUOTA title ends.
    assert long.index("12345") + 5 == header.index("QUOTA") + len("QUOTA")
    assert all(line == line.rstrip() for line in out.splitlines())


def test_values_are_shown_as_written_not_as_markup(base_settings: Settings) -> None:
    out = run(base_settings, "keys", "create", "--name", "[bold]x[/bold] :smile:").output
    assert "[bold]x[/bold] :smile:" in out
    listed = run(base_settings, "keys", "list").output
    assert "[bold]x[/bold] :smile:" in listed


def test_every_data_command_prints_one_json_document(base_settings: Settings) -> None:
    from antihack.shared.sdk.attacks import ATTACKS

    key = json.loads(run(base_settings, "keys", "create", "--name", "j", "--json").stdout)
    api_id = key["api_id"]
    commands = [
        ["keys", "list"],
        ["keys", "show", api_id],
        ["keys", "update", api_id, "--rate", "3"],
        ["usage", "--api-id", api_id],
        ["usage"],
        ["keys", "rotate", api_id],
        ["keys", "revoke", api_id],
    ]
    for args in commands:
        result = run(base_settings, *args, "--json")
        assert result.exit_code == 0, (args, result.output)
        assert result.stderr == "", args
        data = json.loads(result.stdout)  # the whole of stdout is one document
        rows = data if isinstance(data, list) else [data]
        assert api_id in {row["api_id"] for row in rows}, args
    listed = run(base_settings, "attacks", "list", "--json")
    assert [a["name"] for a in json.loads(listed.stdout)] == list(ATTACKS)
    assert all(a["model"] for a in json.loads(listed.stdout))


def test_usage_table_per_key(base_settings: Settings) -> None:
    key = json.loads(run(base_settings, "keys", "create", "--name", "u", "--json").stdout)
    out = run(base_settings, "usage", "--api-id", key["api_id"], "--days", "3").output
    assert f"{key['api_id']}  " in out and "used 0 of unlimited" in out
    assert "no requests in the last 3 days" in out


def test_make_sample_json_describes_the_file(tmp_path: Path) -> None:
    from tests.fixtures_images import astronaut, jittered

    inputs = []
    for i, image in enumerate(jittered(astronaut(), 3)):
        inputs.append(str(tmp_path / f"{i}.png"))
        assert cv2.imwrite(inputs[-1], cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "s.pb"
    result = CliRunner().invoke(main, ["make-sample", *inputs, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "output": str(out),
        "frames": 3,
        "bytes": out.stat().st_size,
        "signed": False,
    }


def test_eval_json_prints_the_summary(tmp_path: Path) -> None:
    from antihack.shared.sdk.sample import build_capture
    from tests.fixtures_images import astronaut
    from tests.genuine import genuine_capture

    for folder, data in (
        ("genuine", genuine_capture(9, n=8).SerializeToString()),
        ("still", build_capture([astronaut()] * 3)),
    ):
        (tmp_path / "set" / folder).mkdir(parents=True)
        (tmp_path / "set" / folder / "a.pb").write_bytes(data)
    report = tmp_path / "r.json"
    args = ["eval", str(tmp_path / "set"), "-o", str(report), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"genuine": 1, "still": 1}
    assert summary["at_seed_threshold"]["apcer"] == {"still": 0.0}
    assert summary["report"] == str(report) and summary["plot"] == str(report.with_suffix(".png"))
    assert "samples" not in summary and len(json.loads(report.read_text())["samples"]) == 2
    assert "not checked: freshness" in result.stderr


def test_make_sample_refuses_an_image_beyond_the_decoder_cap(
    base_settings: Settings, tmp_path: Path
) -> None:
    # 72 Mpx of black compress to a small PNG; OpenCV is capped at 8192^2 px by antihack.shared.
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

    from antihack.shared.cli.quickstart import SAMPLE_FILE, quickstart_text, write_fresh_sample
    from antihack.shared.domain.capture import CaptureLimits, parse_capture

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
