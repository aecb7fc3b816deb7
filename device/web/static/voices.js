// The Voices page: list, delete and enroll (records at the device) through /api/voices.
"use strict";
(() => {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const $ = (id) => document.getElementById(id);

  async function api(path, method = "GET", body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") init.headers["X-CSRF-Token"] = csrf();
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const data = await response.json().catch(() => null);
    if (response.status === 401) location.assign("/login?next=/voices");
    if (!response.ok) throw new Error((data && data.error) || `request failed (HTTP ${response.status})`);
    return data;
  }

  function showError(message) {
    $("voices-error").textContent = message || "";
    $("voices-error").hidden = !message;
  }

  async function refresh() {
    const data = await api("/api/voices");
    const rows = $("voices-rows");
    rows.replaceChildren();
    for (const voice of data.voices) {
      const tr = document.createElement("tr");
      for (const text of [voice.name, voice.created_utc, `${voice.speech_s.toFixed(1)} s`]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      const td = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "danger";
      button.textContent = "Delete";
      button.dataset.name = voice.name;
      button.addEventListener("click", async () => {
        if (!confirm(`Delete the voiceprint of ${voice.name}?`)) return;
        try {
          await api(`/api/voices/${encodeURIComponent(voice.name)}/delete`, "POST", {});
          showError("");
          await refresh();
        } catch (error) {
          showError(error.message);
        }
      });
      td.append(button);
      tr.append(td);
      rows.append(tr);
    }
    $("voices-table").hidden = data.voices.length === 0;
    $("voices-empty").hidden = data.voices.length !== 0;
  }

  $("enroll-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("enroll-button");
    button.disabled = true;
    $("enroll-result").hidden = false;
    $("enroll-result").textContent = "Recording: the person to enroll talks now…";
    try {
      const entry = await api("/api/voices", "POST", {
        name: $("voice-name").value, seconds: Number($("voice-seconds").value), confirm: $("voice-confirm").checked,
      });
      $("enroll-result").textContent = `Enrolled ${entry.name} from ${entry.speech_s.toFixed(1)} s of speech.`;
      showError("");
      await refresh();
    } catch (error) {
      $("enroll-result").hidden = true;
      showError(error.message);
    } finally {
      button.disabled = false;
    }
  });

  refresh().catch((error) => showError(error.message));
})();
