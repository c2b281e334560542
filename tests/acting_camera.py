"""A camera for the browser tests whose face does what the SDK's prompt asks, when it asks.

A Y4M file fed to Chromium's fake camera plays on its own clock, so a blink or a head turn in it
cannot be timed to a prompt the SDK shows at a random moment. Here Chromium's camera is replaced
(a Playwright init script overriding getUserMedia) by a canvas stream that, on every animation
frame, reads the step the SDK is prompting (the ``data-step`` of its ``.antihack-prompt``) and,
REACT_MS after a step's prompt appears, plays that step's clip once at CLIP_FPS, then goes back
to the resting loop: a person following the prompts. The clips are tests/genuine.py's renders of
the astronaut (a real photo animated through her own 3D FaceMesh: head turns with parallax,
painted blinks and mouth openings), served to the page from memory by a Playwright route on the
page's own origin (the demo's CSP allows images from 'self' only). Steps listed in ``skip`` are
never acted: the capture of a person who ignored that prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from playwright.sync_api import BrowserContext, Route

from antihack.shared.domain.capture import encode_jpeg
from tests.genuine import genuine_frames

CLIP_FPS = 15
REACT_MS = 350  # a person's reaction to a prompt they were waiting for
REST = "REST"  # the resting loop, played forwards and backwards
# Frames per clip: a turn or a mouth opening rises and falls over 1.3 s (tests/genuine.py's
# bell) and is held at its peak for HOLD_FRAMES more, as a person holds a pose they were asked
# for (2.4 s with the reaction: within the SDK's 2.5-s step); a blink closes for ~330 ms in the
# middle of its 0.7 s.
CLIP_FRAMES = {REST: 12, "BLINK": 10}
DEFAULT_CLIP_FRAMES = 20
HOLD_FRAMES = 10
PATH = "/__acting_camera__/"

SCRIPT = """
(() => {
  const CLIPS = %(clips)s, SKIP = %(skip)s, FPS = %(fps)d, REACT_MS = %(react)d;
  const images = {};
  for (const [name, count] of Object.entries(CLIPS)) {
    images[name] = [];
    for (let i = 0; i < count; i++) {
      const image = new Image();
      image.src = "%(path)s" + name + "/" + i + ".jpg";
      images[name].push(image);
    }
  }
  const canvas = document.createElement("canvas");
  canvas.width = %(width)d;
  canvas.height = %(height)d;
  const ctx = canvas.getContext("2d");
  const t0 = performance.now();
  const state = { acted: [], prompted: [] };
  window.__actingCamera = state;
  let shown = null, acting = null, from = 0;
  function draw(now) {
    const prompt = document.querySelector(".antihack-prompt");
    const step = prompt ? prompt.getAttribute("data-step") : null;
    if (step !== shown) {
      shown = step;
      if (step && images[step]) {
        state.prompted.push(step);
        if (SKIP.indexOf(step) < 0) {
          acting = step;
          from = now + REACT_MS;
          state.acted.push(step);
        }
      }
    }
    let image = null;
    if (acting && now >= from) {
      const i = Math.floor(((now - from) * FPS) / 1000);
      if (i < images[acting].length) image = images[acting][i];
      else acting = null;
    }
    if (!image) {
      const rest = images.%(rest)s, n = rest.length;
      const k = Math.floor(((now - t0) * FPS) / 1000) %% (2 * n - 2);
      image = rest[k < n ? k : 2 * n - 2 - k];
    }
    if (image.complete && image.naturalWidth) {
      // A camera never sees the same picture twice: sub-pixel shake.
      ctx.drawImage(image, Math.random() - 0.5, Math.random() - 0.5);
    }
    requestAnimationFrame(draw);
  }
  requestAnimationFrame(draw);
  // A fresh stream per call: the SDK stops the tracks of the stream it was given.
  navigator.mediaDevices.getUserMedia = async () => canvas.captureStream();
})();
"""


def render_clips(steps: Iterable[str], seed: int = 11) -> dict[str, list[bytes]]:
    """JPEG frames of the resting loop and of each step's action (512x512, ~40 ms a frame)."""
    clips = {REST: genuine_frames(seed, n=CLIP_FRAMES[REST], fps=CLIP_FPS, still=True)}
    for step in steps:
        n = CLIP_FRAMES.get(step, DEFAULT_CLIP_FRAMES)
        frames = genuine_frames(seed, n=n, fps=CLIP_FPS, still=True, challenges=(step,))
        if step != "BLINK":  # held at the peak (the canvas shakes each copy by a sub-pixel)
            frames = frames[: n // 2] + [frames[n // 2]] * HOLD_FRAMES + frames[n // 2 :]
        clips[step] = frames
    return {name: [encode_jpeg(frame, 92) for frame in frames] for name, frames in clips.items()}


def install(
    context: BrowserContext, clips: dict[str, list[bytes]], skip: Sequence[str] = ()
) -> None:
    """Give every page of ``context`` the acting camera; ``skip``: prompts it ignores."""

    def serve(route: Route) -> None:
        name, _, index = route.request.url.split(PATH, 1)[1].partition("/")
        frames = clips.get(name, [])
        i = int(index.removesuffix(".jpg")) if index.removesuffix(".jpg").isdigit() else -1
        if 0 <= i < len(frames):
            route.fulfill(status=200, content_type="image/jpeg", body=frames[i])
        else:
            route.fulfill(status=404, body="")

    context.route(f"**{PATH}**", serve)
    width = height = 512
    context.add_init_script(
        script=SCRIPT
        % {
            "clips": json.dumps({name: len(frames) for name, frames in clips.items()}),
            "skip": json.dumps(list(skip)),
            "fps": CLIP_FPS,
            "react": REACT_MS,
            "path": PATH,
            "rest": REST,
            "width": width,
            "height": height,
        }
    )
