"""The browser capture SDK (/sdk/antihack.js) and the /demo page, in a real headless Chromium.

Chromium's fake camera plays a Y4M file the test writes: a generated live person blinking once a
second (tests/genuine.py: the astronaut animated through its face mesh). The demo test runs
everything for real: the API and a worker as processes, the page asking its backend for a
session, the SDK recording and submitting with the upload token, the pipeline judging the
capture.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from playwright.sync_api import Page
from sqlalchemy import select

from antihack.shared.domain.capture import CaptureLimits, image_header, parse_capture
from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import CaptureSession, Job
from antihack.shared.proto import liveness_pb2 as pb
from tests.acting_camera import install, render_clips
from tests.browser import chromium
from tests.conftest import Key
from tests.y4m import CAMERA_SIZE, write_blink_camera

# The whole capture, once the page has a session: camera, ~6 s of prompts, upload, analysis.
DEMO_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_blink_camera(tmp_path_factory.mktemp("camera") / "blink.y4m")


def camera_args(video: Path) -> list[str]:
    return [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",  # grant the camera without asking
        f"--use-file-for-fake-video-capture={video}",
    ]


def blank_page(page: Page, base: str) -> None:
    """An empty page on the API's origin (a secure context: 127.0.0.1) with the SDK loaded."""
    page.goto(base + "/healthz")
    page.set_content('<!doctype html><div id="camera"></div>')
    page.add_script_tag(url=base + "/sdk/antihack.js")


def run_async(page: Page, script: str) -> Any:
    """Evaluate an async function body; a rejection comes back as {error: {...}}."""
    return page.evaluate(
        f"""async () => {{
          try {{ return {{ value: await (async () => {{ {script} }})() }}; }}
          catch (e) {{ return {{ error: {{ name: e.name, code: e.code, message: e.message,
                                         status: e.status, httpStatus: e.httpStatus }} }}; }}
        }}"""
    )


# --- served files -----------------------------------------------------------------------------


def test_the_sdk_is_served_as_cacheable_javascript(client: FlaskClient) -> None:
    resp = client.get("/sdk/antihack.js")
    assert resp.status_code == 200
    assert resp.mimetype == "text/javascript"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "max-age=300" in resp.headers["Cache-Control"]
    assert b"Antihack" in resp.data and b"encodeCapture" in resp.data
    again = client.get("/sdk/antihack.js", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(("method", "path"), [("GET", "/demo"), ("POST", "/demo/session")])
def test_the_demo_is_off_without_a_demo_key(client: FlaskClient, method: str, path: str) -> None:
    resp = client.open(path, method=method)
    assert resp.status_code == 404
    assert resp.get_json()["status"] == "NOT_FOUND"


# --- the demo page, end to end ----------------------------------------------------------------


def test_a_person_does_the_demo_and_sees_the_result(
    start_api: Callable[..., str],
    start_worker: Callable[..., Any],
    base_settings: Settings,
    make_key: Callable[..., Key],
    sessions: Any,
    camera: Path,
    tmp_path: Path,
) -> None:
    key = make_key(name="demo")  # its own key: earlier captures' frames would read as replays
    settings = base_settings.replace(
        demo_api_id=key.api_id, session_challenges="BLINK", session_challenge_length=1
    )
    base = start_api(settings)
    start_worker(settings, concurrency=1)
    with chromium(camera_args(camera)) as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 1100})
        page.goto(base + "/demo")
        page.click("#start")
        # One prompt, over the video (the page used to repeat it below: "Blink now" twice).
        page.locator(".antihack-prompt[data-step=BLINK]", has_text="Blink").wait_for()
        assert page.get_by_text("Blink", exact=True).count() == 1
        assert page.text_content("#challenge") == "Your challenge: blink"
        assert page.locator("#camera video").is_visible()
        page.wait_for_selector("body:not([data-state=running])", timeout=DEMO_TIMEOUT_MS)
        screenshot = tmp_path / "demo.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"demo screenshot: {screenshot}")
        assert page.get_attribute("body", "data-state") == "done", page.text_content("#error")

        score = float(page.text_content("#score") or "nan")
        verdict = page.text_content("#verdict")
        assert verdict == ("Hack" if score >= 0.98 else "Genuine")
        fields = page.eval_on_selector_all("#extra td", "cells => cells.map(c => c.dataset.field)")
        assert {"live_proba", "eye_score", "quality_score", "has_no_face"} <= set(fields)
        assert page.text_content("#extra td[data-field=has_no_face]") == "no"
        natural = page.eval_on_selector("#best-frame", "img => [img.naturalWidth, img.complete]")
        assert natural == [CAMERA_SIZE[0], True]
        request_id = page.text_content("#request-id") or ""
        assert request_id.startswith("TID")
        # The SDK stopped the camera and took its video away.
        assert page.locator("#camera video").count() == 0

    with transaction(sessions) as s:
        job = s.get(Job, request_id)
        assert job is not None and job.api_key_id == key.api_id
        assert job.status == "SUCCEEDED"
        assert job.session_check is None
        assert job.input is not None and job.result is not None
        capture = parse_capture(job.input.payload, CaptureLimits())
        reasons = job.result.reasons
        row = s.scalars(select(CaptureSession).where(CaptureSession.job_id == job.id)).one()
        nonce, challenge = row.nonce, row.challenge
    print(f"score {score} ({verdict}); reasons {reasons}; {len(capture.frames)} frames")
    assert capture.platform == pb.WEB
    assert capture.session_nonce == nonce
    assert [pb.Challenge.Name(c) for c in capture.challenges] == challenge == ["BLINK"]
    assert [pb.Challenge.Name(p.step) for p in capture.prompts] == ["BLINK"]
    steps = [f.challenge_step for f in capture.frames]
    assert steps[0] == pb.CHALLENGE_UNSPECIFIED  # "look at the camera" comes first
    assert steps.count(pb.BLINK) >= 12
    assert sum(f.best for f in capture.frames) == 1
    assert not capture.frames[steps.index(pb.BLINK)].best  # the best frame precedes the action
    # The fake camera is Chromium's file-fed test device: the SDK says so, the score shows it.
    assert capture.device.virtual_camera
    assert "virtual_camera" in reasons
    assert not [r for r in reasons if r.startswith("session_")]
    # The painted blink survives the camera, the browser's JPEG and the pipeline.
    assert "challenge_not_met" not in reasons
    assert 0.985 <= score < 0.99  # a strong signal alone: hack by the threshold, not certain


# --- the SDK on an integrator's page ------------------------------------------------------------


def test_an_integrator_callback_gets_the_encoded_capture(
    start_api: Callable[..., str], camera: Path
) -> None:
    base = start_api()
    with chromium(camera_args(camera)) as browser:
        page = browser.new_page()
        blank_page(page, base)
        out = run_async(
            page,
            """
            const prompts = [], phases = [];
            const result = await Antihack.capture({
              session: { nonce: "nonce-from-my-backend", challenge: ["TURN_LEFT", "BLINK", "YAW"] },
              video: document.getElementById("camera"),
              stepMs: 1500, countInMs: 500, readyMs: 600, fps: 8,
              onPrompt: (step, index, total, text) => prompts.push([step, index, total, text]),
              onProgress: (p) => phases.push(p.phase),
              submit: async (bytes, info) => {
                let text = "";
                for (const b of bytes) text += String.fromCharCode(b);
                return { sent: btoa(text), frames: info.frames };
              },
            });
            return { result, prompts, phases: [...new Set(phases)] };
            """,
        )
    assert "error" not in out, out
    value = out["value"]
    data = base64.b64decode(value["result"]["sent"])
    capture = parse_capture(data, CaptureLimits())  # what the server will accept
    # The hand-written encoder writes protobuf's deterministic serialization, the bytes a
    # signature over the capture is computed on.
    assert capture.SerializeToString(deterministic=True) == data
    assert len(capture.frames) == value["result"]["frames"]
    assert capture.version == 1 and capture.platform == pb.WEB
    assert capture.session_nonce == "nonce-from-my-backend"
    assert capture.session_id and capture.session_id != capture.session_nonce
    assert capture.sdk_version.startswith("antihack-web/")
    assert capture.device.model and capture.device.os_version
    drawn = ["TURN_LEFT", "BLINK", "YAW"]
    assert [pb.Challenge.Name(c) for c in capture.challenges] == drawn
    steps = [pb.Challenge.Name(f.challenge_step) for f in capture.frames]
    runs = [s for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]]
    # "Look at the camera" first, and one such frame before each later step (its start pose).
    unset = "CHALLENGE_UNSPECIFIED"
    assert runs == [unset, "TURN_LEFT", unset, "BLINK", unset, "YAW"]
    stamps = [f.timestamp_ms for f in capture.frames]
    assert stamps == sorted(stamps) and stamps[0] >= capture.started_at_ms
    # Each step's prompt time: after every earlier frame, at or before its own first frame.
    assert [pb.Challenge.Name(p.step) for p in capture.prompts] == drawn
    for prompt in capture.prompts:
        first = steps.index(pb.Challenge.Name(prompt.step))
        assert stamps[first - 1] < prompt.shown_at_ms <= stamps[first]
    # BLINK is recorded at 15 frames a second (the camera's rate here), a held step at fps (8).
    print("frames per step", {s: steps.count(s) for s in drawn})
    assert steps.count("BLINK") > 1.5 * steps.count("TURN_LEFT")
    assert sum(f.best for f in capture.frames) == 1
    headers = [image_header(f.image) for f in capture.frames]
    assert {(h.kind, h.width, h.height) for h in headers} == {("jpeg", *CAMERA_SIZE)}
    prompts = [(step, text) for step, _index, _total, text in value["prompts"]]
    assert prompts[0] == ("READY", "Look at the camera")
    assert ("TURN_LEFT", "Turn your head to your left") in prompts
    assert ("BLINK", "Blink") in prompts
    assert ("YAW", "Turn your head left or right") in prompts
    assert prompts[-1] == ("DONE", "Done")
    assert value["phases"] == [
        "camera", "ready", "recording", "countin", "encoding", "submitting", "done"
    ]  # fmt: skip


def test_errors_reach_the_page_with_their_reason(
    start_api: Callable[..., str], camera: Path
) -> None:
    """A refused upload says why (the server's reason); a denied camera says so."""
    base = start_api()
    with chromium(camera_args(camera)) as browser:
        page = browser.new_page()
        blank_page(page, base)
        refused = run_async(
            page,
            f"""
            return await Antihack.capture({{
              session: {{ nonce: "n", challenge: ["BLINK"], upload_token: "ut_not-a-token" }},
              baseUrl: "{base}", video: document.getElementById("camera"),
              stepMs: 600, countInMs: 0, readyMs: 300,
            }});
            """,
        )
        bad_option = run_async(
            page, 'return await Antihack.capture({session: {nonce: "n", challenge: ["WINK"]}});'
        )
    with chromium(["--use-fake-device-for-media-stream", "--deny-permission-prompts"]) as browser:
        page = browser.new_page()
        blank_page(page, base)
        denied = run_async(
            page,
            """
            let reported = null;
            try {
              await Antihack.capture({
                session: { nonce: "n", challenge: ["BLINK"], upload_token: "t" },
                video: document.getElementById("camera"), onError: (e) => { reported = e.code; },
              });
            } catch (e) { e.message += " / reported " + reported; throw e; }
            """,
        )
    assert refused["error"]["code"] == "HTTP"
    assert refused["error"]["httpStatus"] == 401
    assert refused["error"]["status"] == "UNAUTHORIZED"
    assert "invalid upload token" in refused["error"]["message"]
    assert bad_option["error"]["code"] == "BAD_OPTIONS"
    assert "WINK" in bad_option["error"]["message"]
    assert denied["error"]["code"] == "CAMERA_DENIED", denied
    assert denied["error"]["message"].startswith("camera access was denied")
    assert denied["error"]["message"].endswith("reported CAMERA_DENIED")  # onError got it too


# --- a full session of directional steps, with a face that follows the prompts -----------------

SESSION_STEPS = ("BLINK", "OPEN_MOUTH", "TURN_LEFT")  # three axes: any order the server draws


@pytest.fixture(scope="module")
def acting_clips() -> dict[str, list[bytes]]:
    return render_clips(SESSION_STEPS)


def test_a_person_follows_a_three_step_session(
    start_api: Callable[..., str],
    start_worker: Callable[..., Any],
    base_settings: Settings,
    make_key: Callable[..., Key],
    sessions: Any,
    acting_clips: dict[str, list[bytes]],
    tmp_path: Path,
) -> None:
    """The demo end to end with a 3-step session; then the same person ignoring TURN_LEFT sees
    that step named, with what was measured, in words."""
    key = make_key(name="demo-steps")
    settings = base_settings.replace(
        demo_api_id=key.api_id,
        session_challenges=",".join(SESSION_STEPS),
        session_challenge_length=len(SESSION_STEPS),
    )
    base = start_api(settings)
    start_worker(settings, concurrency=1)
    runs: dict[tuple[str, ...], dict[str, Any]] = {}
    with chromium() as browser:
        skip: tuple[str, ...]
        for skip in ((), ("TURN_LEFT",)):
            context = browser.new_context(viewport={"width": 1000, "height": 1400})
            install(context, acting_clips, skip)
            page = context.new_page()
            page.goto(base + "/demo")
            page.click("#start")
            page.wait_for_selector("body:not([data-state=running])", timeout=DEMO_TIMEOUT_MS)
            screenshot = tmp_path / f"demo-skip-{'-'.join(skip) or 'none'}.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"demo screenshot: {screenshot}")
            assert page.get_attribute("body", "data-state") == "done", page.text_content("#error")
            runs[skip] = {
                "request_id": page.text_content("#request-id") or "",
                "camera": page.evaluate("window.__actingCamera"),
                "challenge": page.text_content("#challenge"),
                "failed": page.eval_on_selector_all(
                    "#failed-steps li", "items => items.map(i => [i.dataset.code, i.textContent])"
                ),
                "reasons": page.eval_on_selector_all(
                    "#reasons li", "items => items.map(i => [i.dataset.code, i.textContent])"
                ),
            }
            context.close()

    for skip, run in runs.items():
        with transaction(sessions) as s:
            job = s.get(Job, run["request_id"])
            assert job is not None and job.status == "SUCCEEDED"
            assert job.input is not None and job.result is not None
            capture = parse_capture(job.input.payload, CaptureLimits())
            reasons, failed = job.result.reasons, job.result.failed_steps
            row = s.scalars(select(CaptureSession).where(CaptureSession.job_id == job.id)).one()
            drawn = list(row.challenge)
        print(f"skip {skip}: drawn {drawn}, reasons {reasons}, failed {failed}, page {run}")
        assert sorted(drawn) == sorted(SESSION_STEPS)
        # The SDK prompted each drawn step in order and recorded when; the face saw the prompts.
        assert [pb.Challenge.Name(p.step) for p in capture.prompts] == drawn
        assert run["camera"]["prompted"] == drawn
        assert run["camera"]["acted"] == [s for s in drawn if s not in skip]
        words = {
            "BLINK": "blink",
            "OPEN_MOUTH": "open your mouth wide",
            "TURN_LEFT": "turn your head to your left",
        }
        assert run["challenge"] == "Your challenge: " + ", then ".join(words[s] for s in drawn)
        assert not [r for r in reasons if r.startswith("session_")]
        if not skip:
            assert failed == [] and "challenge_not_met" not in reasons
            assert run["failed"] == []
            continue
        # The ignored step, and only it, is named; /demo says which step, in words.
        assert failed is not None
        assert [f["step"] for f in failed] == ["TURN_LEFT"]
        assert re.fullmatch(r"yaw reached -?\d+°, needs \d+°", failed[0]["why"])
        number = drawn.index("TURN_LEFT") + 1
        expected = f"Step {number}, turn your head to your left: {failed[0]['why']}"
        assert run["failed"] == [["TURN_LEFT", expected]]
        shown = dict(run["reasons"])
        assert shown["challenge_not_met"] == "a step was not done as asked (see the steps above)"
