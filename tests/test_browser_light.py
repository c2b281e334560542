"""The LIGHT step through the real browser SDK, the API, a worker and the pipeline.

Chromium's camera is replaced (a Playwright init script overriding getUserMedia) by a canvas
stream that draws the astronaut's face, close to the screen as the SDK asks, and, each
animation frame, adds the colour the SDK is showing (its full-screen ``.antihack-light``
element; the page's white when there is none) on the face with the diffuse-reflection model of
tests/light_physics.py (Lambertian shading and 1/d² fall-off from her FaceMesh points; the wall
behind, 1.5 m away, barely lit). The variant that does not add the colour is an injected video:
the SDK, the session and the upload are all genuine, only the face does not answer the screen.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import requests

from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import Job
from antihack.shared.proto import liveness_pb2 as pb
from antihack.worker.pipeline.detect import detect_faces
from antihack.worker.pipeline.landmarks import face_landmarks
from antihack.worker.pipeline.light import NOT_REFLECTED, UNIFORM_RESPONSE
from antihack.worker.pipeline.run import Pipeline
from tests.browser import chromium
from tests.conftest import Key
from tests.helpers import png_bytes
from tests.light_physics import FACE_DISTANCE_CM, face_crop, geometry
from tests.test_browser_capture import blank_page, run_async

# The white screen's light on the face over the room's (an office, tests/light_physics.py).
RHO = 0.15
WALL_M = 1.5

CANVAS_CAMERA = """
(() => {
  const TINT = %(tint)s, RHO = %(rho)s;
  const base = new Image(), layer = new Image();
  base.src = "data:image/png;base64,%(base)s";
  layer.src = "data:image/png;base64,%(layer)s";
  const canvas = document.createElement("canvas");
  canvas.width = %(width)d; canvas.height = %(height)d;
  const ctx = canvas.getContext("2d");
  const tint = document.createElement("canvas");
  tint.width = canvas.width; tint.height = canvas.height;
  const tctx = tint.getContext("2d");
  function screenColour() {
    const el = document.querySelector(".antihack-light");
    return el ? getComputedStyle(el).backgroundColor : "rgb(255, 255, 255)";
  }
  function draw() {
    if (base.complete && layer.complete) {
      // A hand-held camera never sees the same picture twice: sub-pixel shake.
      const dx = Math.random() - 0.5, dy = Math.random() - 0.5;
      ctx.globalCompositeOperation = "source-over";
      ctx.globalAlpha = 1;
      ctx.drawImage(base, dx, dy);
      if (TINT) {
        // What the screen adds: albedo x geometry (the layer) x the screen's colour.
        tctx.globalCompositeOperation = "source-over";
        tctx.drawImage(layer, dx, dy);
        tctx.globalCompositeOperation = "multiply";
        tctx.fillStyle = screenColour();
        tctx.fillRect(0, 0, tint.width, tint.height);
        ctx.globalCompositeOperation = "lighter";
        ctx.globalAlpha = RHO;
        ctx.drawImage(tint, 0, 0);
      }
    }
    requestAnimationFrame(draw);
  }
  requestAnimationFrame(draw);
  const stream = canvas.captureStream();
  navigator.mediaDevices.getUserMedia = async () => stream;
  window.__canvasCamera = true;
})();
"""


def camera_script(tint: bool) -> str:
    """The init script: the face crop and its screen-lit layer, drawn into a canvas stream."""
    image, _ = face_crop()
    pipeline = Pipeline.load()
    box = detect_faces(pipeline.models, [image])[0][0]
    points = face_landmarks(pipeline.models, [image], [box])[0].points
    geo = geometry(points)
    wall = (FACE_DISTANCE_CM / (WALL_M * 100 + FACE_DISTANCE_CM)) ** 2
    g = np.where(geo.head, geo.near, wall)[..., None]
    layer = np.clip(image.astype(np.float32) * g, 0, 255).astype(np.uint8)
    return CANVAS_CAMERA % {
        "tint": json.dumps(tint),
        "rho": RHO,
        "base": base64.b64encode(png_bytes(image)).decode(),
        "layer": base64.b64encode(png_bytes(layer)).decode(),
        "width": image.shape[1],
        "height": image.shape[0],
    }


@pytest.mark.parametrize("tint", [True, False], ids=["face answers", "injected video"])
def test_the_face_must_answer_the_screens_colours(
    start_api: Callable[..., str],
    start_worker: Callable[..., Any],
    base_settings: Settings,
    make_key: Callable[..., Key],
    sessions: Any,
    tint: bool,
) -> None:
    settings = base_settings.replace(session_challenges="LIGHT", session_challenge_length=1)
    base = start_api(settings)
    start_worker(settings, concurrency=1)
    key = make_key(name=f"light-{tint}")  # its own key: no earlier frames to match as replays
    created = requests.post(base + "/v1/sessions", headers=key.headers, timeout=30)
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["challenge"] == ["LIGHT"]
    light = session["light"]
    assert len(light["colors"]) == 6 and all(250 <= ms <= 400 for ms in light["durations_ms"])

    with chromium() as browser:
        context = browser.new_context()
        context.add_init_script(script=camera_script(tint))
        page = context.new_page()
        blank_page(page, base)
        assert page.evaluate("window.__canvasCamera === true")
        out = run_async(
            page,
            f"""
            const seen = [];
            const result = await Antihack.capture({{
              session: {json.dumps(session)}, baseUrl: "{base}",
              video: document.getElementById("camera"), countInMs: 600, readyMs: 600,
              onPrompt: (step, index, total, text) => seen.push(text),
            }});
            return {{ score: result.score, requestId: result.request_id, seen }};
            """,
        )
        context.close()
    assert "error" not in out, out
    value = out["value"]
    assert "Bring your face close to the screen and hold still now" in value["seen"]

    with transaction(sessions) as s:
        job = s.get(Job, value["requestId"])
        assert job is not None and job.result is not None and job.input is not None
        reasons = job.result.reasons
        capture = pb.Capture.FromString(job.input.payload)
    stamped = [f.light_index for f in capture.frames if f.challenge_step == pb.LIGHT]
    stamps = [f.timestamp_ms for f in capture.frames if f.light_index]
    # The SDK grabs at 16 fps; a frame the camera had not renewed yet is skipped (on a loaded
    # machine a few are), so the rate is the median spacing, not the count over the span.
    fps = 1000 / float(np.median(np.diff(stamps)))
    print(f"tint={tint}: score {value['score']}, reasons {reasons}, {len(capture.frames)} frames, "
          f"{len(stamped)} in the LIGHT step at {fps:.1f} fps")  # fmt: skip
    assert sorted(set(stamped)) == list(range(7))  # black, then the six colours
    assert fps >= 15
    assert job.session_check is None
    if tint:
        assert NOT_REFLECTED not in reasons and UNIFORM_RESPONSE not in reasons
    else:
        assert NOT_REFLECTED in reasons
        assert value["score"] >= 0.98
