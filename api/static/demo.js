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

  function reasonText(reason) {
    if (typeof reason === "string") return reason;
    return reason.code || reason.reason || JSON.stringify(reason);
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

  function showResult(result) {
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
    var reasons = (job.reasons || []).map(reasonText);
    text("reasons", reasons.length ? "Signals: " + reasons.join(", ") : "");
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
      text("challenge", "Your challenge: " + session.challenge.join(", then ").toLowerCase());
      var result = await Antihack.capture({
        session: session,
        video: $("camera"),
        onPrompt: function (_step, _index, _total, prompt) {
          text("prompt", prompt);
        },
        onProgress: function (p) {
          $("progress").value = p.fraction;
          text("status", PHASES[p.phase] || p.phase);
        },
      });
      text("prompt", "");
      text("status", "");
      showResult(result);
      body.dataset.state = "done";
    } catch (err) {
      text("prompt", "");
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
