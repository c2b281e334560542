/*! antihack capture SDK for browsers. Apache-2.0. Served by antihack at /sdk/antihack.js.
 *
 * No build step and no dependencies: include it with a <script> tag and use the global
 * `Antihack`. Plain ES2017 (async/await, no modules).
 *
 *   <script src="https://antihack.example.com/sdk/antihack.js"></script>
 *   const result = await Antihack.capture({
 *     session,                 // from POST /v1/sessions, made by YOUR backend with your key
 *     baseUrl: "https://antihack.example.com",
 *     video: document.getElementById("camera"),   // a <video>, or a container for one
 *     onPrompt(step, index, total, text) { ... },  // show `text` if you draw your own UI
 *     onProgress({ phase, fraction }) { ... },
 *   });
 *   // result.score >= 0.98 means hack; result.extra, result.image_base64 (the judged frame)
 *
 * What it does: opens the front camera (getUserMedia; needs https or localhost), shows each of
 * the session's challenges in turn (e.g. TURN_LEFT, BLINK, OPEN_MOUTH; "look at the camera"
 * between them), records JPEG frames of each step from the moment its prompt is shown, at a
 * bounded rate, size and count (BLINK at 15 fps; see frameBudget), encodes them as a capture
 * (proto/liveness.proto: platform WEB, the session's nonce and challenge, frames tagged with
 * their step, one best frame, and when each step's prompt was shown), stops the camera, and then
 * either
 *   - submit: "direct" (default): POSTs it to `${baseUrl}/v1/jobs` with the session's
 *     short-lived upload token, polls the job and resolves with its result (the seed body:
 *     `score`, `extra`, `image_base64`; the whole job resource is in `result.job`), or
 *   - submit: async (bytes, info) => any: hands the encoded capture (a Uint8Array) to your
 *     function, which forwards it to your backend, and resolves with what that returns.
 *
 * Errors reject the promise (and go to onError) as an `Antihack.AntihackError` whose `message`
 * says what happened; `code` is one of CAMERA_DENIED, NO_CAMERA, CAMERA_BUSY, INSECURE_CONTEXT,
 * CAMERA_FAILED, BAD_OPTIONS, ABORTED, HTTP (then `status`, `reason`, `httpStatus` and
 * `requestId` are the server's error body), JOB_FAILED (the job's error body likewise),
 * TIMEOUT, NETWORK.
 */
(function (root) {
  "use strict";

  var VERSION = "1.0.0";
  // Enum values of proto/liveness.proto.
  var CHALLENGES = { BLINK: 1, MOUTH: 2, NOD: 3, YAW: 4 };
  // The directional steps (issue 14): the person's own left and right, up and down.
  CHALLENGES.TURN_LEFT = 5;
  CHALLENGES.TURN_RIGHT = 6;
  CHALLENGES.LOOK_UP = 7;
  CHALLENGES.LOOK_DOWN = 8;
  CHALLENGES.OPEN_MOUTH = 9;
  CHALLENGES.SMILE = 10;
  CHALLENGES.MOVE_CLOSER = 11;
  CHALLENGES.LIGHT = 12; // LIGHT step (issue 15), see recordLight
  var PLATFORM_WEB = 3;
  var PROMPTS = {
    READY: "Look at the camera",
    BLINK: "Blink",
    MOUTH: "Open your mouth",
    NOD: "Nod your head",
    YAW: "Turn your head left or right",
    // "your left": the person's own, whichever way the preview is mirrored (the SDK's is).
    TURN_LEFT: "Turn your head to your left",
    TURN_RIGHT: "Turn your head to your right",
    LOOK_UP: "Look up",
    LOOK_DOWN: "Look down",
    OPEN_MOUTH: "Open your mouth wide",
    SMILE: "Smile",
    MOVE_CLOSER: "Move your face closer to the camera",
    LIGHT: "Bring your face close to the screen and hold still",
    DONE: "Done",
  };
  var DEFAULTS = {
    baseUrl: "",
    submit: "direct",
    // Held steps (a turn, a look, an open mouth, a smile, moving closer): recorded from their
    // prompt at `fps` (at most 15) for `stepMs`, time to read, react and hold the pose.
    fps: 6,
    stepMs: 2500,
    // BLINK: at `blinkFps` (15-30) for `blinkMs`, so that a 100-ms blink is seen whatever its
    // phase against the frame clock.
    blinkFps: 15,
    blinkMs: 1600,
    // Before each step after the first, "look at the camera" is shown this long (each step then
    // starts facing the camera); before LIGHT, its own prompt counts in this long.
    countInMs: 1000,
    readyMs: 1000, // "look at the camera" before the first step; the best frame comes from it
    readyFrames: 4,
    maxFrames: 64, // the server's default limit (CaptureLimits.max_frames); see frameBudget
    maxSide: 640, // frames are scaled down so that their longest side is at most this
    jpegQuality: 0.85,
    pollIntervalMs: 1000,
    timeoutMs: 120000, // for the job to finish, once submitted
    returnImage: true,
    returnExtra: true,
    prompts: null,
  };
  // Server-side text fields hold at most 100 characters (shared/domain/capture.py MAX_ID_CHARS).
  var MAX_TEXT = 100;
  // Camera labels of virtual (software) cameras, and of Chromium's test devices (fake_device_0,
  // or the path of the video file fed to it): a capture made through one is flagged
  // device.virtual_camera, which the server treats as a strong signal. A determined attacker
  // can edit this script, so the flag only catches the careless; the session does the rest.
  var VIRTUAL_CAMERA =
    /virtual|fake|manycam|xsplit|snap camera|vcam|camtwist|mmhmm|e2esoft|splitcam|\.(y4m|mjpe?g)$/i;

  // --- errors -----------------------------------------------------------------------------

  function AntihackError(code, message, details) {
    var err = new Error(message);
    Object.setPrototypeOf(err, AntihackError.prototype);
    err.name = "AntihackError";
    err.code = code;
    if (details) {
      Object.keys(details).forEach(function (k) {
        err[k] = details[k];
      });
    }
    return err;
  }
  AntihackError.prototype = Object.create(Error.prototype, {
    constructor: { value: AntihackError, writable: true, configurable: true },
  });

  function cameraError(exc) {
    var name = exc && exc.name;
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      return AntihackError("CAMERA_DENIED", "camera access was denied: allow the camera for this page and try again");
    }
    if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
      return AntihackError("NO_CAMERA", "no camera was found on this device");
    }
    if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
      return AntihackError("CAMERA_BUSY", "the camera could not be started: is another application using it?");
    }
    return AntihackError("CAMERA_FAILED", "the camera could not be opened: " + ((exc && exc.message) || exc));
  }

  // --- protobuf encoding (only what proto/liveness.proto needs) ---------------------------

  var utf8 = new TextEncoder();

  function Writer() {
    this.parts = [];
    this.length = 0;
  }
  Writer.prototype.raw = function (bytes) {
    this.parts.push(bytes);
    this.length += bytes.length;
  };
  // Unsigned varint of a non-negative integer up to 2^53 (bitwise ops would cut at 2^32).
  Writer.prototype.varint = function (value) {
    if (!(value >= 0) || value > Number.MAX_SAFE_INTEGER || Math.floor(value) !== value) {
      throw AntihackError("BAD_OPTIONS", "cannot encode " + value + " as a varint");
    }
    var out = [];
    while (value >= 0x80) {
      out.push((value % 0x80) | 0x80);
      value = Math.floor(value / 0x80);
    }
    out.push(value);
    this.raw(Uint8Array.from(out));
  };
  Writer.prototype.tag = function (field, wireType) {
    this.varint(field * 8 + wireType);
  };
  // Proto3 leaves fields at their default value (0, false, empty) off the wire.
  Writer.prototype.uint = function (field, value) {
    if (value) {
      this.tag(field, 0);
      this.varint(value);
    }
  };
  Writer.prototype.bool = function (field, value) {
    if (value) {
      this.tag(field, 0);
      this.varint(1);
    }
  };
  Writer.prototype.bytes = function (field, bytes) {
    if (bytes && bytes.length) {
      this.tag(field, 2);
      this.varint(bytes.length);
      this.raw(bytes);
    }
  };
  Writer.prototype.string = function (field, text) {
    if (text) this.bytes(field, utf8.encode(text));
  };
  Writer.prototype.message = function (field, writer) {
    this.tag(field, 2);
    this.varint(writer.length);
    this.raw(writer.finish());
  };
  Writer.prototype.packed = function (field, values) {
    if (!values.length) return;
    var inner = new Writer();
    values.forEach(function (v) {
      inner.varint(v);
    });
    this.message(field, inner);
  };
  Writer.prototype.finish = function () {
    var out = new Uint8Array(this.length);
    var offset = 0;
    this.parts.forEach(function (part) {
      out.set(part, offset);
      offset += part.length;
    });
    return out;
  };

  function challengeValue(name) {
    var value = CHALLENGES[name];
    if (!value) throw AntihackError("BAD_OPTIONS", "unknown challenge " + JSON.stringify(name));
    return value;
  }

  /**
   * Serialize a capture (field names as in proto/liveness.proto, camelCase) to protobuf bytes:
   * {version, sessionId, sdkVersion, platform, device: {model, osVersion, isEmulator, isRooted,
   * virtualCamera}, startedAtMs, challenges: ["BLINK"], frames: [{image: Uint8Array,
   * timestampMs, challengeStep: "BLINK" | null, best, lightIndex}], sessionNonce, prompts:
   * [{step: "BLINK", shownAtMs}]}. Fields are written in field-number order (protobuf's
   * deterministic serialization, the bytes a signature covers). No signature: a browser cannot keep a signing secret (the session's
   * nonce is what vouches for a browser capture).
   */
  function encodeCapture(capture) {
    var w = new Writer();
    w.uint(1, capture.version === undefined ? 1 : capture.version);
    w.string(2, capture.sessionId);
    w.string(3, capture.sdkVersion);
    w.uint(4, capture.platform === undefined ? PLATFORM_WEB : capture.platform);
    var device = capture.device;
    if (device) {
      var d = new Writer();
      d.string(1, device.model);
      d.string(2, device.osVersion);
      d.bool(3, device.isEmulator);
      d.bool(4, device.isRooted);
      d.bool(5, device.virtualCamera);
      w.message(5, d);
    }
    w.uint(6, capture.startedAtMs);
    w.packed(7, (capture.challenges || []).map(challengeValue));
    (capture.frames || []).forEach(function (frame) {
      var f = new Writer();
      f.bytes(1, frame.image);
      f.uint(2, frame.timestampMs);
      f.uint(3, frame.challengeStep ? challengeValue(frame.challengeStep) : 0);
      f.bool(4, frame.best);
      f.uint(5, frame.lightIndex || 0); // LIGHT: the colour on screen (1-based), 0 = none
      w.message(8, f);
    });
    w.string(9, capture.sessionNonce);
    (capture.prompts || []).forEach(function (p) {
      var sp = new Writer();
      sp.uint(1, challengeValue(p.step));
      sp.uint(2, p.shownAtMs); // int64 on the wire; a non-negative one is a plain varint
      w.message(10, sp);
    });
    return w.finish();
  }

  // --- helpers ----------------------------------------------------------------------------

  function clip(text) {
    text = String(text || "");
    return text.length > MAX_TEXT ? text.slice(0, MAX_TEXT) : text;
  }

  function randomId() {
    var c = root.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    var bytes = new Uint8Array(16);
    c.getRandomValues(bytes);
    return Array.prototype.map
      .call(bytes, function (b) {
        return (b + 0x100).toString(16).slice(1);
      })
      .join("");
  }

  function deviceInfo(track) {
    var nav = root.navigator || {};
    var uaData = nav.userAgentData;
    var model = "";
    if (uaData && uaData.brands) {
      var brands = uaData.brands.filter(function (b) {
        return !/not.?a.?brand/i.test(b.brand);
      });
      var brand = brands.filter(function (b) {
        return b.brand !== "Chromium";
      })[0] || brands[0];
      if (brand) model = brand.brand + " " + brand.version;
    }
    if (!model) {
      var m = /(Firefox|Edg|OPR|Chrome|Version)\/([\d.]+)/.exec(nav.userAgent || "");
      model = m ? (m[1] === "Version" ? "Safari" : m[1]) + " " + m[2] : nav.userAgent || "browser";
    }
    if (uaData && uaData.mobile) model += " mobile";
    var label = (track && track.label) || "";
    return {
      model: clip(model),
      osVersion: clip((uaData && uaData.platform) || nav.platform || ""),
      isEmulator: false,
      isRooted: false,
      virtualCamera: VIRTUAL_CAMERA.test(label),
    };
  }

  function sleep(ms, signal) {
    return new Promise(function (resolve, reject) {
      var timer = setTimeout(done, ms);
      function done() {
        if (signal) signal.removeEventListener("abort", aborted);
        resolve();
      }
      function aborted() {
        clearTimeout(timer);
        reject(AntihackError("ABORTED", "the capture was cancelled"));
      }
      if (signal) {
        if (signal.aborted) return aborted();
        signal.addEventListener("abort", aborted);
      }
    });
  }

  function checkAborted(signal) {
    if (signal && signal.aborted) throw AntihackError("ABORTED", "the capture was cancelled");
  }

  // --- camera and view --------------------------------------------------------------------

  async function openCamera() {
    if (!root.isSecureContext || !root.navigator.mediaDevices || !root.navigator.mediaDevices.getUserMedia) {
      throw AntihackError(
        "INSECURE_CONTEXT",
        "the camera is only available on a secure page: open it over https (or on localhost)"
      );
    }
    try {
      return await root.navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } },
      });
    } catch (exc) {
      throw cameraError(exc);
    }
  }

  // A <video> to show the camera in, and a prompt line over it when the SDK draws its own view.
  function makeView(target, doc) {
    var created = [];
    var video = target;
    var prompt = null;
    if (!target || target.tagName !== "VIDEO") {
      var container = target;
      if (!container) {
        throw AntihackError("BAD_OPTIONS", "options.video must be a <video> element or a container element");
      }
      var box = doc.createElement("div");
      box.className = "antihack-view";
      box.style.position = "relative";
      box.style.display = "inline-block";
      box.style.maxWidth = "100%";
      video = doc.createElement("video");
      video.className = "antihack-video";
      video.style.display = "block";
      video.style.maxWidth = "100%";
      video.style.transform = "scaleX(-1)"; // a mirror, as people expect; frames are not mirrored
      prompt = doc.createElement("div");
      prompt.className = "antihack-prompt";
      prompt.setAttribute("role", "status");
      prompt.setAttribute("aria-live", "assertive");
      var s = prompt.style;
      s.position = "absolute";
      s.left = s.right = "0";
      s.bottom = "0";
      s.padding = "0.6em";
      s.textAlign = "center";
      s.font = "600 1.4em system-ui, sans-serif";
      s.color = "#fff";
      s.background = "rgba(0, 0, 0, 0.55)";
      box.appendChild(video);
      box.appendChild(prompt);
      container.appendChild(box);
      created.push(box);
    }
    video.muted = true;
    video.setAttribute("muted", "");
    video.setAttribute("playsinline", "");
    video.autoplay = true;
    return {
      video: video,
      prompt: prompt,
      remove: function () {
        created.forEach(function (el) {
          if (el.parentNode) el.parentNode.removeChild(el);
        });
      },
    };
  }

  async function startVideo(video, stream, signal) {
    video.srcObject = stream;
    try {
      await video.play();
    } catch (exc) {
      throw AntihackError("CAMERA_FAILED", "the camera's video could not be played: " + exc.message);
    }
    for (var waited = 0; !video.videoWidth; waited += 50) {
      if (waited > 10000) throw AntihackError("CAMERA_FAILED", "the camera sent no picture within 10 s");
      await sleep(50, signal);
    }
  }

  // --- recording --------------------------------------------------------------------------

  // Grabs frames from the video, scaled to maxSide, as JPEG bytes with a timestamp.
  function Recorder(video, opts, clock) {
    var scale = Math.min(1, opts.maxSide / Math.max(video.videoWidth, video.videoHeight));
    this.canvas = video.ownerDocument.createElement("canvas");
    this.canvas.width = Math.round(video.videoWidth * scale);
    this.canvas.height = Math.round(video.videoHeight * scale);
    this.ctx = this.canvas.getContext("2d");
    this.video = video;
    this.opts = opts;
    this.clock = clock;
    this.frames = [];
    this.pending = [];
    // Counts the frames the camera delivered, where the browser can tell, so that a slow
    // camera's frame is not recorded twice (identical frames look like an injected still).
    this.presented = 0;
    this.lastGrabbed = -1;
    var self = this;
    if (typeof video.requestVideoFrameCallback === "function") {
      var onFrame = function (_now, meta) {
        self.presented = meta.presentedFrames || self.presented + 1;
        if (!self.stopped) video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    }
  }

  Recorder.prototype.grab = function (step, best, lightIndex) {
    if (this.presented && this.presented === this.lastGrabbed) return false;
    this.lastGrabbed = this.presented;
    var timestampMs = this.clock();
    this.ctx.drawImage(this.video, 0, 0, this.canvas.width, this.canvas.height);
    var frame = { image: null, timestampMs: timestampMs, challengeStep: step, best: !!best, lightIndex: lightIndex || 0 };
    this.frames.push(frame);
    var quality = this.opts.jpegQuality;
    var canvas = this.canvas;
    this.pending.push(
      new Promise(function (resolve, reject) {
        canvas.toBlob(
          function (blob) {
            if (!blob) return reject(AntihackError("CAMERA_FAILED", "a frame could not be encoded as JPEG"));
            blob.arrayBuffer().then(function (buf) {
              frame.image = new Uint8Array(buf);
              resolve();
            }, reject);
          },
          "image/jpeg",
          quality
        );
      })
    );
    return true;
  };

  // Record `count` frames spread over `ms` milliseconds, tagged with `step`.
  Recorder.prototype.record = async function (step, count, ms, signal, onTick) {
    var start = root.performance.now();
    var interval = ms / count;
    var taken = 0;
    for (var i = 0; i < count; i++) {
      var due = start + i * interval;
      var wait = due - root.performance.now();
      if (wait > 0) await sleep(wait, signal);
      checkAborted(signal);
      // The camera had no new frame yet (a 15-fps camera recorded at 15 fps, a little early):
      // wait for it rather than lose it, at most most of an interval.
      if (this.grab(step, false) || ((await this.newFrame(0.8 * interval, signal)) && this.grab(step, false))) {
        taken++;
      }
      if (onTick) onTick((i + 1) / count);
    }
    var rest = start + ms - root.performance.now();
    if (rest > 0) await sleep(rest, signal);
    return taken;
  };

  // Whether the camera presents a frame not yet grabbed within `ms` (true where it cannot tell).
  Recorder.prototype.newFrame = async function (ms, signal) {
    var until = root.performance.now() + ms;
    while (this.presented === this.lastGrabbed && root.performance.now() < until) await sleep(8, signal);
    return this.presented !== this.lastGrabbed;
  };

  // The pause's one frame is taken this long before the next step's prompt (the server takes
  // a step's starting pose from the frames up to 400 ms before its prompt).
  var PAUSE_FRAME_MS = 150;

  Recorder.prototype.finish = async function () {
    this.stopped = true;
    await Promise.all(this.pending);
    return this.frames;
  };

  // --- LIGHT step (issue 15) --------------------------------------------------------------
  //
  // The screen fills with each of the session's colours in turn (session.light: {colors,
  // durations_ms}) after LIGHT_BASELINE_MS of black, while frames are grabbed at LIGHT_FPS:
  // one as each colour is set, then every 1/LIGHT_FPS s, none in the last LIGHT_GAP_MS of a
  // colour. Each frame is stamped with the colour's 1-based index (light_index; 0 = black).
  // The SDK has no face detector: the count-in prompt asks the person to come close (face at
  // least 40% of the frame's width); the server judges whatever face it finds.

  var LIGHT_FPS = 16;
  var LIGHT_BASELINE_MS = 200;
  var LIGHT_GAP_MS = 20;

  function lightFrames(light) {
    var frames = Math.ceil((LIGHT_BASELINE_MS * LIGHT_FPS) / 1000);
    light.durations_ms.forEach(function (ms) {
      frames += Math.ceil(((ms - LIGHT_GAP_MS) * LIGHT_FPS) / 1000);
    });
    return frames;
  }

  function checkLight(light) {
    var ok =
      light &&
      Array.isArray(light.colors) &&
      Array.isArray(light.durations_ms) &&
      light.colors.length > 0 &&
      light.colors.length === light.durations_ms.length &&
      light.colors.every(function (c) {
        return /^#[0-9a-f]{6}$/i.test(c);
      }) &&
      light.durations_ms.every(function (ms) {
        return ms > 0 && ms <= 10000;
      });
    if (!ok) throw AntihackError("BAD_OPTIONS", "a LIGHT step needs options.session.light: {colors, durations_ms}");
  }

  async function recordLight(recorder, light, doc, signal) {
    var overlay = doc.createElement("div");
    overlay.className = "antihack-light";
    var s = overlay.style;
    s.position = "fixed";
    s.left = s.top = "0";
    s.width = "100vw";
    s.height = "100vh";
    s.zIndex = "2147483647";
    s.pointerEvents = "none";
    var parts = [{ index: 0, color: "#000000", ms: LIGHT_BASELINE_MS }].concat(
      light.colors.map(function (color, i) {
        return { index: i + 1, color: color, ms: light.durations_ms[i] };
      })
    );
    doc.body.appendChild(overlay);
    try {
      for (var p = 0; p < parts.length; p++) {
        var part = parts[p];
        s.background = part.color;
        overlay.setAttribute("data-light-index", String(part.index));
        var start = root.performance.now();
        var end = start + part.ms;
        for (var due = start; due < end - LIGHT_GAP_MS; due += 1000 / LIGHT_FPS) {
          var wait = due - root.performance.now();
          if (wait > 0) await sleep(wait, signal);
          checkAborted(signal);
          recorder.grab("LIGHT", false, part.index);
        }
        var rest = end - root.performance.now();
        if (rest > 0) await sleep(rest, signal);
      }
    } finally {
      if (overlay.parentNode) overlay.parentNode.removeChild(overlay);
    }
  }

  // --- submission -------------------------------------------------------------------------

  async function request(url, init, what) {
    var response;
    try {
      response = await root.fetch(url, init);
    } catch (exc) {
      throw AntihackError("NETWORK", what + " failed: the server could not be reached (" + exc.message + ")");
    }
    var body = null;
    try {
      body = await response.json();
    } catch (_exc) {
      body = null;
    }
    if (!response.ok) {
      var reason = (body && body.reason) || response.statusText || "no reason given";
      throw AntihackError("HTTP", what + " failed: " + reason + " (HTTP " + response.status + ")", {
        httpStatus: response.status,
        status: body && body.status,
        reason: body && body.reason,
        requestId: body && body.request_id,
      });
    }
    if (!body) throw AntihackError("HTTP", what + " failed: the answer is not JSON", { httpStatus: response.status });
    return body;
  }

  async function submitDirect(bytes, opts, signal, progress) {
    var base = String(opts.baseUrl || "").replace(/\/+$/, "");
    var auth = { Authorization: "Bearer " + opts.session.upload_token };
    var form = new FormData();
    form.append("liveness_data_file", new Blob([bytes], { type: "application/octet-stream" }), "capture.pb");
    if (opts.returnImage) form.append("return_image", "1");
    if (opts.returnExtra) form.append("return_extra", "1");
    progress("uploading", 0.85);
    var accepted = await request(
      base + "/v1/jobs",
      { method: "POST", headers: auth, body: form, signal: signal },
      "uploading the capture"
    );
    var url = base + "/v1/jobs/" + encodeURIComponent(accepted.request_id);
    var deadline = root.performance.now() + opts.timeoutMs;
    var polls = 0;
    progress("processing", 0.9, { requestId: accepted.request_id });
    for (;;) {
      var job = await request(url, { headers: auth, signal: signal, cache: "no-store" }, "reading the job");
      if (job.status === "SUCCEEDED") {
        var result = Object.assign({}, job.result || {});
        Object.defineProperty(result, "job", { value: job, enumerable: false });
        return result;
      }
      if (job.status === "FAILED") {
        var err = job.result || {};
        throw AntihackError("JOB_FAILED", "the analysis failed: " + (err.reason || err.status || "no reason given"), {
          status: err.status,
          reason: err.reason,
          requestId: job.request_id,
          job: job,
        });
      }
      if (root.performance.now() > deadline) {
        throw AntihackError("TIMEOUT", "no result within " + Math.round(opts.timeoutMs / 1000) + " s (job " + job.request_id + ")", {
          requestId: job.request_id,
        });
      }
      polls++;
      // Approach 0.99 without reaching it: the job's remaining time is unknown.
      progress("processing", 0.9 + 0.09 * (1 - Math.pow(0.9, polls)), { requestId: accepted.request_id });
      await sleep(opts.pollIntervalMs, signal);
    }
  }

  // --- the capture ------------------------------------------------------------------------

  function checkSession(session) {
    if (!session || typeof session !== "object") {
      throw AntihackError("BAD_OPTIONS", "options.session is required: the body of POST /v1/sessions");
    }
    if (!Array.isArray(session.challenge) || !session.challenge.length) {
      throw AntihackError("BAD_OPTIONS", "options.session.challenge must be a non-empty list such as [\"BLINK\"]");
    }
    session.challenge.forEach(challengeValue);
    if (session.challenge.indexOf("LIGHT") >= 0) checkLight(session.light);
    if (!session.nonce) throw AntihackError("BAD_OPTIONS", "options.session.nonce is missing");
  }

  function resolveOptions(options) {
    var opts = Object.assign({}, DEFAULTS, options || {});
    checkSession(opts.session);
    // LIGHT records ~35-45 frames of its own: take the server's whole default limit (64).
    var light = opts.session.challenge.indexOf("LIGHT") >= 0;
    if (light && !(options && options.maxFrames)) opts.maxFrames = 64;
    if (opts.submit !== "direct" && typeof opts.submit !== "function") {
      throw AntihackError("BAD_OPTIONS", "options.submit must be \"direct\" or a function (bytes) => Promise");
    }
    if (opts.submit === "direct" && !opts.session.upload_token) {
      throw AntihackError("BAD_OPTIONS", "submit \"direct\" needs options.session.upload_token");
    }
    opts.fps = Math.max(1, Math.min(15, Number(opts.fps) || DEFAULTS.fps));
    // Below 15 fps a 100-ms blink can fall between two frames (issue 14).
    opts.blinkFps = Math.max(15, Math.min(30, Number(opts.blinkFps) || DEFAULTS.blinkFps));
    opts.blinkMs = Math.max(1000, Math.min(5000, Number(opts.blinkMs) || DEFAULTS.blinkMs));
    opts.countInMs = Math.max(0, Math.min(5000, Number(opts.countInMs) || 0));
    opts.maxFrames = Math.max(4, Math.min(64, Number(opts.maxFrames) || DEFAULTS.maxFrames));
    opts.maxSide = Math.max(240, Math.min(1920, Number(opts.maxSide) || DEFAULTS.maxSide));
    opts.prompts = Object.assign({}, PROMPTS, opts.prompts || {});
    return opts;
  }

  // The frame budget. The server takes at most 64 frames (CaptureLimits.max_frames) and 10 MiB
  // (a 640x480 JPEG at quality 0.85 is 30-60 kB, so 64 frames are ~2-4 MB). Parts:
  //   - a few "ready" frames (the best frame is one of them);
  //   - BLINK: blinkFps (15) x blinkMs (1.6 s) = 24 frames, one every 67 ms: a 100-ms blink
  //     always lands on at least one frame, with open frames around it;
  //   - each held step (turn, look, open mouth, smile, move closer, legacy MOUTH/NOD/YAW):
  //     fps (6) x stepMs (2.5 s) = 15 frames: a held pose needs no more;
  //   - LIGHT: its own frames (lightCount, 0 without one);
  //   - one "look at the camera" frame in the pause before each later step: its starting pose.
  // Three steps with a BLINK: 4 + 24 + 15 + 15 + 2 = 60 frames. Over maxFrames (four steps, or
  // a LIGHT step), the pauses' frames go first, then the held steps' rate (down to 3 frames
  // each), then BLINK's length at its rate (down to 1 s), and only then BLINK's rate.
  function frameBudget(opts, steps, lightCount) {
    var ready = Math.max(1, Math.min(opts.readyFrames, Math.floor(opts.maxFrames / 4)));
    var parts = steps.map(function (step, index) {
      var blink = step === "BLINK";
      var ms = blink ? opts.blinkMs : opts.stepMs;
      var fps = blink ? opts.blinkFps : opts.fps;
      return {
        step: step,
        ms: ms,
        fps: fps,
        frames: step === "LIGHT" ? lightCount : Math.max(3, Math.round((ms / 1000) * fps)),
        pause: index > 0 && step !== "LIGHT" && opts.countInMs >= 200 ? 1 : 0,
      };
    });
    var over = ready - opts.maxFrames;
    parts.forEach(function (p) {
      over += p.frames + p.pause;
    });
    // Take one frame at a time from the largest part of `group` above `floor`.
    function shave(group, floor) {
      while (over > 0) {
        var largest = null;
        group.forEach(function (p) {
          if (p.frames > floor && (!largest || p.frames > largest.frames)) largest = p;
        });
        if (!largest) return;
        largest.frames--;
        over--;
      }
    }
    var blinks = parts.filter(function (p) {
      return p.step === "BLINK";
    });
    var held = parts.filter(function (p) {
      return p.step !== "BLINK" && p.step !== "LIGHT";
    });
    parts.forEach(function (p) {
      if (over > 0 && p.pause) {
        p.pause = 0;
        over--;
      }
    });
    shave(held, 3);
    shave(blinks, Math.round(opts.blinkFps));
    blinks.forEach(function (p) {
      p.ms = Math.min(p.ms, Math.max(1000, Math.round((p.frames * 1000) / p.fps)));
    });
    shave(blinks, 3);
    return { ready: ready, parts: parts };
  }

  /**
   * Record the session's challenges with the camera and submit the capture.
   *
   * options: session (required: {nonce, challenge, upload_token, ...} from POST /v1/sessions),
   * video (a <video> element, or a container the SDK draws a video and a prompt into),
   * baseUrl (the antihack server, for submit "direct"; default: this page's origin),
   * submit ("direct" | async (bytes: Uint8Array, info) => any), onPrompt(step, index, total,
   * text), onProgress({phase, fraction, ...}), onError(err), signal (an AbortSignal),
   * prompts ({BLINK: "…", READY: "…"}: your own texts), stream (a MediaStream of your own,
   * not stopped by the SDK), and the bounds fps, stepMs, blinkFps, blinkMs, countInMs,
   * readyMs, maxFrames, maxSide, jpegQuality, pollIntervalMs, timeoutMs.
   * onPrompt gets ("READY", -1) first, ("READY", i) in the pause before step i > 0, (step, i)
   * as step i's recording starts, then ("DONE", total); the SDK's own prompt element carries
   * the step in its data-step attribute.
   * Phases: camera, ready, countin, recording, encoding, uploading (direct), processing
   * (direct), submitting (callback), done.
   */
  async function capture(options) {
    var opts;
    var onError = (options && options.onError) || function () {};
    var stream = null;
    var ownStream = false;
    var view = null;
    var recorder = null;
    try {
      opts = resolveOptions(options);
      var signal = opts.signal;
      var doc = (opts.video && opts.video.ownerDocument) || root.document;
      var steps = opts.session.challenge.slice();
      var total = steps.length;
      var hasLight = steps.indexOf("LIGHT") >= 0;
      var budget = frameBudget(opts, steps, hasLight ? lightFrames(opts.session.light) : 0);
      var recordMs = opts.readyMs + total * opts.countInMs;
      budget.parts.forEach(function (part) {
        recordMs += part.ms;
      });
      var shown = []; // when each step's prompt was shown: Capture.prompts
      var elapsed = 0;
      var progress = function (phase, fraction, extra) {
        if (opts.onProgress) opts.onProgress(Object.assign({ phase: phase, fraction: fraction }, extra || {}));
      };
      var prompt = function (step, index, text) {
        if (view && view.prompt) {
          view.prompt.textContent = text;
          view.prompt.setAttribute("data-step", step); // for styling (and the browser tests)
        }
        if (opts.onPrompt) opts.onPrompt(step, index, total, text);
      };
      // The step's action counts from here on (the server judges it within a window after).
      var promptShown = function (step) {
        shown.push({ step: step, shownAtMs: clock() });
      };
      var recordingProgress = function (phase, partMs, extra) {
        return function (f) {
          progress(phase, 0.05 + (0.75 * (elapsed + f * partMs)) / recordMs, extra);
        };
      };

      progress("camera", 0);
      view = makeView(opts.video, doc);
      if (opts.stream) {
        stream = opts.stream;
      } else {
        stream = await openCamera();
        ownStream = true;
      }
      checkAborted(signal);
      await startVideo(view.video, stream, signal);
      var track = stream.getVideoTracks()[0];

      // Wall clock once, then a monotonic clock (proto/liveness.proto): never backwards.
      var startedAtMs = Date.now();
      var t0 = root.performance.now();
      var clock = function () {
        return startedAtMs + Math.round(root.performance.now() - t0);
      };
      recorder = new Recorder(view.video, opts, clock);

      // Before the first action: eyes open and facing the camera, the frame to judge.
      prompt("READY", -1, opts.prompts.READY);
      await recorder.record(null, budget.ready, opts.readyMs, signal, recordingProgress("ready", opts.readyMs));
      elapsed += opts.readyMs;
      var ready = recorder.frames.filter(function (f) {
        return !f.challengeStep;
      });
      // The SDK cannot see eyes; the pipeline passes over a best frame caught mid-blink.
      if (ready.length) ready[Math.floor(ready.length / 2)].best = true;

      for (var index = 0; index < total; index++) {
        var step = steps[index];
        var part = budget.parts[index];
        var text = opts.prompts[step] || step;
        var info = { step: step, index: index, total: total };
        if (step === "LIGHT") {
          for (var left = opts.countInMs; left > 0; left -= 1000) {
            prompt(step, index, text + " in " + Math.ceil(left / 1000) + "…");
            progress("countin", 0.05 + (0.75 * (elapsed + opts.countInMs - left)) / recordMs, info);
            await sleep(Math.min(1000, left), signal);
          }
          elapsed += opts.countInMs;
          prompt(step, index, text + " now");
          promptShown(step);
          await recordLight(recorder, opts.session.light, doc, signal);
          elapsed += opts.stepMs;
          continue;
        }
        if (index > 0) {
          // Back to facing the camera: each step starts from there, and its name is shown only
          // when its recording starts (an action done early would be before its prompt).
          prompt("READY", index, opts.prompts.READY);
          progress("countin", 0.05 + (0.75 * elapsed) / recordMs, info);
          await sleep(opts.countInMs - PAUSE_FRAME_MS * part.pause, signal);
          if (part.pause) {
            recorder.grab(null, false); // the step's starting pose
            await sleep(PAUSE_FRAME_MS, signal);
          }
          elapsed += opts.countInMs;
        }
        prompt(step, index, text);
        promptShown(step);
        await recorder.record(step, part.frames, part.ms, signal, recordingProgress("recording", part.ms, info));
        elapsed += part.ms;
      }
      prompt("DONE", total, opts.prompts.DONE);

      progress("encoding", 0.8);
      var frames = await recorder.finish();
      if (!frames.some(function (f) { return f.best; }) && frames.length) frames[0].best = true;
      if (ownStream) stopStream(stream);
      stream = null;
      var bytes = encodeCapture({
        version: 1,
        sessionId: randomId(), // fresh per capture: the server treats a reused one as a replay
        sdkVersion: "antihack-web/" + VERSION,
        platform: PLATFORM_WEB,
        device: deviceInfo(track),
        startedAtMs: startedAtMs,
        challenges: steps,
        frames: frames,
        sessionNonce: opts.session.nonce,
        prompts: shown,
      });

      var result;
      if (opts.submit === "direct") {
        result = await submitDirect(bytes, opts, signal, progress);
      } else {
        progress("submitting", 0.85);
        result = await opts.submit(bytes, { session: opts.session, frames: frames.length, bytes: bytes.length });
      }
      progress("done", 1);
      return result;
    } catch (exc) {
      var err = exc instanceof Error && exc.name === "AntihackError" ? exc : toError(exc);
      try {
        onError(err);
      } catch (_ignored) {
        // the integrator's callback must not hide the original error
      }
      throw err;
    } finally {
      if (recorder) recorder.stopped = true;
      if (stream && ownStream) stopStream(stream);
      if (view) {
        view.video.srcObject = null;
        view.remove();
      }
    }
  }

  function toError(exc) {
    if (exc && exc.name === "AbortError") return AntihackError("ABORTED", "the capture was cancelled");
    return AntihackError("FAILED", (exc && exc.message) || String(exc), { cause: exc });
  }

  function stopStream(stream) {
    stream.getTracks().forEach(function (t) {
      t.stop();
    });
  }

  root.Antihack = {
    version: VERSION,
    capture: capture,
    encodeCapture: encodeCapture,
    AntihackError: AntihackError,
    CHALLENGES: Object.freeze(Object.assign({}, CHALLENGES)),
    PROMPTS: Object.freeze(Object.assign({}, PROMPTS)),
  };
})(typeof window !== "undefined" ? window : self);
