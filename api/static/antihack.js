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
 * the session's challenges (e.g. BLINK then YAW) with a short count-in, records JPEG frames of
 * each step at a bounded rate, size and count, encodes them as a capture
 * (proto/liveness.proto: platform WEB, the session's nonce and challenge, frames tagged with
 * their step, one best frame), stops the camera, and then either
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
  var PLATFORM_WEB = 3;
  var PROMPTS = {
    READY: "Look at the camera",
    BLINK: "Blink",
    MOUTH: "Open your mouth",
    NOD: "Nod your head",
    YAW: "Turn your head left or right",
    DONE: "Done",
  };
  var DEFAULTS = {
    baseUrl: "",
    submit: "direct",
    fps: 8, // frames per second recorded during a step (at most 15)
    stepMs: 3000, // recording time per challenge
    countInMs: 2000, // the prompt is shown this long before each step is recorded
    readyMs: 1200, // "look at the camera" before the first step; the best frame comes from it
    readyFrames: 4,
    maxFrames: 48, // the server's default limit is 64 frames
    maxSide: 640, // frames are scaled down so that their longest side is at most this
    jpegQuality: 0.85,
    pollIntervalMs: 1000,
    timeoutMs: 120000, // for the job to finish, once submitted
    returnImage: true,
    returnExtra: true,
    prompts: null,
  };
  // Server-side text fields hold at most 100 characters (shared/capture.py MAX_ID_CHARS).
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
   * timestampMs, challengeStep: "BLINK" | null, best}], sessionNonce}. Fields are written in
   * field-number order. No signature: a browser cannot keep a signing secret (the session's
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
      w.message(8, f);
    });
    w.string(9, capture.sessionNonce);
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

  Recorder.prototype.grab = function (step, best) {
    if (this.presented && this.presented === this.lastGrabbed) return false;
    this.lastGrabbed = this.presented;
    var timestampMs = this.clock();
    this.ctx.drawImage(this.video, 0, 0, this.canvas.width, this.canvas.height);
    var frame = { image: null, timestampMs: timestampMs, challengeStep: step, best: !!best };
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
      if (this.grab(step, false)) taken++;
      if (onTick) onTick((i + 1) / count);
    }
    var rest = start + ms - root.performance.now();
    if (rest > 0) await sleep(rest, signal);
    return taken;
  };

  Recorder.prototype.finish = async function () {
    this.stopped = true;
    await Promise.all(this.pending);
    return this.frames;
  };

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
    if (!session.nonce) throw AntihackError("BAD_OPTIONS", "options.session.nonce is missing");
  }

  function resolveOptions(options) {
    var opts = Object.assign({}, DEFAULTS, options || {});
    checkSession(opts.session);
    if (opts.submit !== "direct" && typeof opts.submit !== "function") {
      throw AntihackError("BAD_OPTIONS", "options.submit must be \"direct\" or a function (bytes) => Promise");
    }
    if (opts.submit === "direct" && !opts.session.upload_token) {
      throw AntihackError("BAD_OPTIONS", "submit \"direct\" needs options.session.upload_token");
    }
    opts.fps = Math.max(1, Math.min(15, Number(opts.fps) || DEFAULTS.fps));
    opts.maxFrames = Math.max(4, Math.min(64, Number(opts.maxFrames) || DEFAULTS.maxFrames));
    opts.maxSide = Math.max(240, Math.min(1920, Number(opts.maxSide) || DEFAULTS.maxSide));
    opts.prompts = Object.assign({}, PROMPTS, opts.prompts || {});
    return opts;
  }

  // Frames per part: a few "ready" frames, then the same number per step, within maxFrames.
  function frameBudget(opts, steps) {
    var ready = Math.max(1, Math.min(opts.readyFrames, Math.floor(opts.maxFrames / 4)));
    var perStep = Math.round((opts.stepMs / 1000) * opts.fps);
    perStep = Math.max(3, Math.min(perStep, Math.floor((opts.maxFrames - ready) / steps)));
    return { ready: ready, perStep: perStep };
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
   * not stopped by the SDK), and the bounds fps, stepMs, countInMs, readyMs, maxFrames,
   * maxSide, jpegQuality, pollIntervalMs, timeoutMs.
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
      var budget = frameBudget(opts, total);
      var recordMs = opts.readyMs + total * (opts.countInMs + opts.stepMs);
      var elapsed = 0;
      var progress = function (phase, fraction, extra) {
        if (opts.onProgress) opts.onProgress(Object.assign({ phase: phase, fraction: fraction }, extra || {}));
      };
      var prompt = function (step, index, text) {
        if (view && view.prompt) view.prompt.textContent = text;
        if (opts.onPrompt) opts.onPrompt(step, index, total, text);
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
        var text = opts.prompts[step] || step;
        var info = { step: step, index: index, total: total };
        for (var left = opts.countInMs; left > 0; left -= 1000) {
          prompt(step, index, text + " in " + Math.ceil(left / 1000) + "…");
          progress("countin", 0.05 + (0.75 * (elapsed + opts.countInMs - left)) / recordMs, info);
          await sleep(Math.min(1000, left), signal);
        }
        elapsed += opts.countInMs;
        prompt(step, index, text + " now");
        await recorder.record(step, budget.perStep, opts.stepMs, signal, recordingProgress("recording", opts.stepMs, info));
        elapsed += opts.stepMs;
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
