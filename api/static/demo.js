// The /demo page: asks its backend (POST /demo/session) for a capture session, records it with
// the browser SDK (Antihack.capture, submitted directly with the session's upload token) and
// shows the result. A file, not an inline script, so that the page runs under a strict CSP.
(function () {
  "use strict";

  var body = document.body;
  var threshold = Number(body.dataset.hackThreshold);
  var PHASES = {
    camera: "Opening the camera…",
    ready: "Recording",
    countin: "Get ready",
    recording: "Recording",
    encoding: "Packing the capture…",
    uploading: "Uploading…",
    processing: "Analysing…",
    done: "Done",
  };

  // extra flags that report a problem when true (is_live is the one good news flag).
  var PROBLEM_FLAGS = [
    "quality_too_low", "blur_or_dark", "has_no_face", "face_too_small", "image_too_small",
    "masked", "face_quality_low", "eye_closed",
  ];

  function $(id) {
    return document.getElementById(id);
  }

  function text(id, value) {
    $(id).textContent = value;
  }

  function formatValue(value) {
    if (typeof value === "number") return value.toFixed(3);
    if (typeof value === "boolean") return value ? "yes" : "no";
    return String(value);
  }

  // The job's reason codes in words (worker/pipeline, shared/domain/capture_sessions.py); unknown codes are
  // shown as they are, underscores as spaces.
  var REASONS = {
    challenge_not_met: "a step was not done as asked (see the steps above)",
    planar_face: "the face moved as a flat surface: a photo or a screen turned in front of the camera",
    virtual_camera: "the camera is a virtual (software) camera, which can play any video",
    emulator: "the capture comes from an emulator",
    rooted_device: "the device is rooted",
    still_image_injected: "a still image was fed to the camera as if it were video",
    frames_identical: "several frames are the very same picture: a still image, not a camera",
    frames_repeated: "some frames repeat",
    frames_replayed: "these frames were already submitted: a replay",
    frames_similar: "the frames look very much like an earlier capture's",
    frames_out_of_order: "the frames are not in the order they were filmed",
    session_replayed: "this capture was already submitted: a replay",
    signature_missing: "the capture is not signed, and this key requires it",
    signature_invalid: "the capture's signature does not match: it was altered",
    signature_unverifiable: "the capture's signature cannot be checked",
    timestamps_not_monotonic: "the frames' times go backwards: the frames were reordered",
    timestamps_flat: "the frames all carry the same time",
    timestamps_partial: "some frames carry no time",
    timestamps_span_implausible: "the frames' times span an implausible length",
    timestamp_in_future: "the capture's times are in the future",
    frame_before_start: "a frame is older than the capture's start",
    capture_too_old: "the capture was recorded too long ago",
    pad_below_operator_threshold: "the picture looks like a print or a screen, not a face",
    light_not_reflected: "the face did not reflect the screen's colours: a video played to the camera",
    light_uniform_response: "the whole picture answered the screen's colours evenly: a screen or a print",
    session_required: "this key requires a capture session, and the capture has none",
    session_unknown: "the capture's session is unknown",
    session_expired: "the capture session expired before the capture was sent",
    session_reused: "the capture session was already used: a replay",
    session_challenge_mismatch: "the capture shows other steps than the session asked for",
    session_step_order: "the steps were not recorded in the order asked",
    session_time_outside: "the capture was not recorded during its session",
  };

  function reasonCode(reason) {
    if (typeof reason === "string") return reason;
    return String(reason.code || reason.reason || JSON.stringify(reason));
  }

  function reasonText(code) {
    return REASONS[code] || code.replace(/_/g, " ");
  }

  // "turn your head to your left": the SDK's prompt for a step, as part of a sentence.
  function stepWords(step) {
    var prompt = (Antihack.PROMPTS && Antihack.PROMPTS[step]) || step.toLowerCase().replace(/_/g, " ");
    return prompt.charAt(0).toLowerCase() + prompt.slice(1);
  }

  // "Step 2, turn your head to your left: yaw reached 4°, needs 15°", in the drawn order.
  function failedStepTexts(challenge, failed) {
    var used = {};
    return failed.map(function (f) {
      var index = -1;
      for (var i = 0; i < challenge.length; i++) {
        if (challenge[i] === f.step && !used[i]) {
          index = i;
          break;
        }
      }
      if (index >= 0) used[index] = true;
      var where = index >= 0 ? "Step " + (index + 1) + ", " : "";
      return { step: f.step, text: where + stepWords(f.step) + ": " + f.why };
    });
  }

  function fillList(id, items) {
    var list = $(id);
    list.textContent = "";
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.textContent = item.text;
      li.dataset.code = item.code;
      list.appendChild(li);
    });
    list.hidden = !items.length;
    $(id + "-title").hidden = !items.length;
  }

  async function newSession() {
    var response = await fetch(body.dataset.sessionUrl, {
      method: "POST",
      headers: { Accept: "application/json" },
    });
    var data = null;
    try {
      data = await response.json();
    } catch (_exc) {
      data = null;
    }
    if (!response.ok || !data) {
      var reason = (data && data.reason) || response.statusText;
      throw new Error("the demo could not start a session: " + reason + " (HTTP " + response.status + ")");
    }
    return data;
  }

  function showResult(result, session) {
    var score = Number(result.score);
    var hack = score >= threshold;
    var verdict = $("verdict");
    verdict.textContent = hack ? "Hack" : "Genuine";
    verdict.className = "verdict " + (hack ? "hack" : "genuine");
    text("score", score.toFixed(4));
    var rows = $("extra").querySelector("tbody");
    rows.textContent = "";
    var extra = result.extra || {};
    Object.keys(extra).forEach(function (name) {
      var row = document.createElement("tr");
      var key = document.createElement("th");
      key.textContent = name;
      var value = document.createElement("td");
      value.textContent = formatValue(extra[name]);
      value.dataset.field = name;
      if (extra[name] === true && PROBLEM_FLAGS.indexOf(name) >= 0) value.className = "flag-on";
      row.appendChild(key);
      row.appendChild(value);
      rows.appendChild(row);
    });
    var image = $("best-frame");
    if (result.image_base64) {
      image.src = "data:image/jpeg;base64," + result.image_base64;
      image.hidden = false;
    } else {
      image.hidden = true;
    }
    var job = result.job || {};
    fillList(
      "failed-steps",
      failedStepTexts(session.challenge || [], job.failed_steps || []).map(function (f) {
        return { code: f.step, text: f.text };
      })
    );
    fillList(
      "reasons",
      (job.reasons || []).map(reasonCode).map(function (code) {
        return { code: code, text: reasonText(code) };
      })
    );
    text("request-id", result.request_id || job.request_id || "");
    $("result").hidden = false;
  }

  async function start() {
    var button = $("start");
    button.disabled = true;
    $("result").hidden = true;
    $("error").hidden = true;
    $("progress").hidden = false;
    $("progress").value = 0;
    body.dataset.state = "running";
    try {
      text("status", "Starting a session…");
      var session = await newSession();
      text("challenge", "Your challenge: " + session.challenge.map(stepWords).join(", then "));
      var result = await Antihack.capture({
        session: session,
        // The SDK draws the video and its prompt over it (the page shows no second copy).
        video: $("camera"),
        onProgress: function (p) {
          $("progress").value = p.fraction;
          text("status", PHASES[p.phase] || p.phase);
        },
      });
      text("status", "");
      showResult(result, session);
      body.dataset.state = "done";
    } catch (err) {
      text("status", "");
      text("error", err.message || String(err));
      $("error").hidden = false;
      body.dataset.state = "error";
    } finally {
      $("progress").hidden = true;
      button.disabled = false;
      button.textContent = "Try again";
    }
  }

  $("start").addEventListener("click", start);
})();
