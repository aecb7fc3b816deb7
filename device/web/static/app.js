// affectbox status page: fetches the JSON API and draws the pages (inline SVG charts, no libraries).
// Every value from the API reaches the page through textContent or SVG attributes, never innerHTML.
// It never shows or requests video or audio: only the aggregates the API returns.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const DASH = "–";
  const STATUS_POLL_MS = 3000;
  const LIVE_POLL_MS = 2000;
  // chart colours outside the label palette, from device/labels.py through the template (one place)
  const CHART_COLOURS = JSON.parse(document.getElementById("chart-colours").textContent || "{}");
  const VALENCE_COLOUR = CHART_COLOURS.valence;
  const AROUSAL_COLOUR = CHART_COLOURS.arousal;
  const NO_MOOD_COLOUR = CHART_COLOURS.no_mood;
  const LABEL_INFO = JSON.parse(document.getElementById("label-info").textContent || "[]");
  const COLOURS = Object.fromEntries(LABEL_INFO.map((x) => [x.label, x.colour]));

  // ---- small helpers -----------------------------------------------------------------------

  const $ = (sel) => document.querySelector(sel);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const finite = (x) => typeof x === "number" && Number.isFinite(x);
  const fmt = (x, digits = 2) => (finite(x) ? x.toFixed(digits) : DASH);
  const signed = (x, digits = 2) => (finite(x) ? (x > 0 ? "+" : "") + x.toFixed(digits) : DASH);
  const pct = (x) => (finite(x) ? Math.round(100 * x) + " %" : DASH);
  const colourOf = (label) => COLOURS[label] || "#999999";

  function clock(seconds) {
    if (!finite(seconds)) return DASH;
    const total = Math.max(0, Math.round(seconds));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    const mm = String(m).padStart(2, "0");
    const ss = String(s).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function duration(seconds) {
    if (!finite(seconds)) return DASH;
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    const h = Math.floor(seconds / 3600);
    return `${h} h ${Math.round((seconds % 3600) / 60)} min`;
  }

  // Deliberately local: the API answers UTC in the one format (2025-01-31T09:15:02.123Z,
  // device/contract/timestamps.py); the page shows it in the viewer's local time.
  function when(iso) {
    if (!iso) return DASH;
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function showError(node, message) {
    if (!node) return;
    node.textContent = message || "";
    node.hidden = !message;
  }

  function badge(state, text) {
    return el("span", { class: "badge", dataset: { state: state || "unknown" }, text: text || state || DASH });
  }

  function facts(dl, rows) {
    dl.replaceChildren();
    for (const [name, value] of rows) {
      dl.append(el("dt", { text: name }), el("dd", {}, value instanceof Node ? value : String(value ?? DASH)));
    }
  }

  function swatch(colour, line) {
    const s = el("span", { class: line ? "swatch line" : "swatch" });
    s.style.background = colour;
    return s;
  }

  // items: [name, colour, isLine]
  function legend(node, items) {
    if (!node) return;
    node.replaceChildren(...items.map(([name, colour, line]) => el("span", {}, swatch(colour, line), name)));
  }

  // ---- the API ---------------------------------------------------------------------------------

  const csrfToken = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function toLogin() {
    const next = location.pathname + location.search;
    location.assign("/login?next=" + encodeURIComponent(next));
  }

  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" };
    if (init.method !== "GET") init.headers["X-CSRF-Token"] = csrfToken();
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401 && !options.noRedirect) {
      toLogin();
      throw new Error((data && data.error) || "login required");
    }
    if (!response.ok) {
      const error = new Error((data && data.error) || `request failed (HTTP ${response.status})`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // Polls `fn` every `ms` while the page is visible; a hidden tab costs the device nothing.
  function poll(fn, ms) {
    let timer = null;
    let busy = false;
    async function tick() {
      timer = null;
      if (document.hidden) return;
      if (!busy) {
        busy = true;
        try { await fn(); } finally { busy = false; }
      }
      timer = setTimeout(tick, ms);
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && timer === null && !busy) tick();
    });
    tick();
  }

  // ---- charts (inline SVG) ------------------------------------------------------------------

  // A chart with a numeric x axis. spec: {width, height, x: [x0, x1], y: [y0, y1], yTicks, xTicks: [[v, label]],
  // lines: [{colour, points: [[x, y|null]], name}], dots: [{x, y, colour, title}], strip: [{x0, x1, colour, title}],
  // zero: bool, label}
  function chart(spec) {
    const W = spec.width || 900;
    const H = spec.height || 220;
    const left = 46, right = 24, top = 10;
    const stripH = spec.strip ? 18 : 0;
    const bottom = 24 + (stripH ? stripH + 6 : 0);
    const plotH = H - top - bottom;
    const [x0, x1] = spec.x;
    const [y0, y1] = spec.y;
    const sx = (v) => left + ((v - x0) / ((x1 - x0) || 1)) * (W - left - right);
    const sy = (v) => top + (1 - (v - y0) / ((y1 - y0) || 1)) * plotH;
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.label || "chart" });
    root.append(svg("title", {}, spec.label || "chart"));
    for (const t of spec.yTicks || []) {
      root.append(svg("line", { x1: left, x2: W - right, y1: sy(t), y2: sy(t), class: t === 0 && spec.zero ? "zero-line" : "grid-line" }));
      root.append(svg("text", { x: left - 6, y: sy(t) + 4, "text-anchor": "end" }, spec.yFormat ? spec.yFormat(t) : t));
    }
    for (const [v, label] of spec.xTicks || []) {
      root.append(svg("line", { x1: sx(v), x2: sx(v), y1: top, y2: top + plotH, class: "grid-line" }));
      root.append(svg("text", { x: sx(v), y: H - 6, "text-anchor": "middle" }, label));
    }
    for (const line of spec.lines || []) {
      let d = "";
      let pen = false;
      for (const [x, y] of line.points) {
        if (!finite(y)) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
        pen = true;
      }
      if (d) {
        const path = svg("path", { d, fill: "none", stroke: line.colour, "stroke-width": line.width || 2.2,
          "stroke-linejoin": "round", "data-series": line.name || "" });
        if (line.dash) path.setAttribute("stroke-dasharray", line.dash);
        root.append(path);
      }
      for (const [x, y] of line.points) {
        if (finite(y) && line.markers) root.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2.6, fill: line.colour }));
      }
    }
    for (const dot of spec.dots || []) {
      if (!finite(dot.y)) continue;
      const c = svg("circle", { cx: sx(dot.x), cy: sy(dot.y), r: dot.r || 5, fill: dot.colour, stroke: "#fff", "stroke-width": 1.2 });
      c.append(svg("title", {}, dot.title || ""));
      root.append(c);
    }
    if (spec.strip) {
      const yStrip = top + plotH + 4;
      for (const cell of spec.strip) {
        const w = Math.max(1, sx(cell.x1) - sx(cell.x0) - 0.5);
        const r = svg("rect", { x: sx(cell.x0), y: yStrip, width: w, height: stripH, fill: cell.colour, "data-label": cell.label || "" });
        r.append(svg("title", {}, cell.title || ""));
        root.append(r);
      }
    }
    return root;
  }

  function timeTicks(t0, t1) {
    const span = Math.max(1, t1 - t0);
    const steps = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
    const step = steps.find((s) => span / s <= 8) || 7200;
    const ticks = [];
    for (let v = Math.ceil(t0 / step) * step; v <= t1 + 1e-9; v += step) ticks.push([v, clock(v)]);
    return ticks;
  }

  // Valence and arousal per window over item time, dominant label strip below.
  function windowChart(windows, t0, t1, label) {
    const mid = (w) => (w.start + w.end) / 2;
    return chart({
      width: 900, height: 230, x: [t0, t1], y: [-1, 1], yTicks: [-1, -0.5, 0, 0.5, 1], zero: true,
      xTicks: timeTicks(t0, t1), label,
      lines: [
        { name: "valence", colour: VALENCE_COLOUR, points: windows.map((w) => [mid(w), w.valence]), markers: windows.length < 80 },
        { name: "arousal", colour: AROUSAL_COLOUR, dash: "6 3", points: windows.map((w) => [mid(w), w.arousal]), markers: windows.length < 80 },
      ],
      strip: windows.map((w) => ({
        x0: w.start, x1: w.end, colour: w.dominant ? colourOf(w.dominant) : NO_MOOD_COLOUR, label: w.dominant || "",
        title: `${clock(w.start)}–${clock(w.end)}: ${w.dominant || "no mood estimate"}`,
      })),
    });
  }

  const VA_LEGEND = [["valence", VALENCE_COLOUR, true], ["arousal (dashed)", AROUSAL_COLOUR, true]];
  const LABEL_LEGEND = () => LABEL_INFO.map((x) => [x.label, x.colour]).concat([["no estimate", NO_MOOD_COLOUR]]);

  // ---- pages ---------------------------------------------------------------------------------

  function loginPage() {
    const form = $("#login-form");
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = $("#login-button");
      button.disabled = true;
      showError($("#login-error"), "");
      try {
        await api("/api/login", { method: "POST", body: { password: $("#password").value }, noRedirect: true });
        location.assign(form.dataset.next || "/");
      } catch (error) {
        showError($("#login-error"), error.message);
        $("#password").select();
      } finally {
        button.disabled = false;
      }
    });
  }

  function componentRow(name, c) {
    const frames = c.frames ?? c.items ?? c.windows ?? null;
    const dropped = c.dropped ?? c.frames_dropped ?? c.overflows ?? null;
    return el("tr", { dataset: { component: name } },
      el("td", { text: name }),
      el("td", {}, badge(c.state)),
      el("td", { text: c.detail || "" }),
      el("td", { class: "num", text: frames ?? DASH }),
      el("td", { class: "num", text: dropped ?? DASH }));
  }

  function throttledText(t) {
    if (t === null || t === undefined) return "not available";
    const now = Object.entries(t).filter(([k, v]) => v === true && !k.includes("occurred") && !k.startsWith("had")).map(([k]) => k.replaceAll("_", " "));
    const past = Object.entries(t).filter(([k, v]) => v === true && (k.includes("occurred") || k.startsWith("had"))).map(([k]) => k.replaceAll("_", " "));
    if (!now.length && !past.length) return "no (" + (t.raw || "0x0") + ")";
    return [now.length ? "now: " + now.join(", ") : "", past.length ? "since boot: " + past.join(", ") : ""].filter(Boolean).join("; ");
  }

  function statusPage() {
    poll(async () => {
      let s;
      try {
        s = await api("/api/status");
      } catch (error) {
        showError($("#status-error"), "Cannot reach the device: " + error.message);
        return;
      }
      showError($("#status-error"), "");
      const state = $("#state");
      state.dataset.state = s.state || "unknown";
      state.textContent = s.state || DASH;
      const health = $("#health");
      health.hidden = !s.health;
      health.dataset.state = s.health || "unknown";
      health.textContent = s.health ? "health: " + s.health : "";
      $("#updated").textContent = new Date().toLocaleTimeString();
      const dev = s.device || {};
      facts($("#device-facts"), [
        ["device id", dev.id || DASH], ["site", dev.site || DASH], ["room", dev.room || DASH],
        ["software", s.software_version || DASH], ["up for", duration(s.uptime_s)],
      ]);
      const box = $("#session-facts");
      if (s.session) {
        const dl = el("dl", { class: "facts" });
        facts(dl, [["patient", s.session.patient_id], ["started", when(s.session.started_utc)],
          ["elapsed", clock(s.session.elapsed_s)], ["ends after", duration(s.session.max_duration_s)]]);
        box.replaceChildren(dl);
      } else {
        box.replaceChildren(el("p", { class: "muted", text: "No session running." }));
      }
      const comps = s.components || {};
      const hub = comps.hub || {};
      const outbox = hub.outbox || {};
      facts($("#hub-facts"), [
        ["state", badge(hub.state)],
        ["connected", hub.connected === true ? "yes" : hub.connected === false ? "no" : DASH],
        ["outbox depth", outbox.depth ?? DASH],
        ["oldest queued", finite(outbox.oldest_age_s) ? duration(outbox.oldest_age_s) : DASH],
        ["last error", hub.last_error || hub.detail || DASH],
      ]);
      const pi = s.pi || {};
      const temp = pi.temperature_c ?? pi.cpu_temperature_c;
      facts($("#pi-facts"), [
        ["CPU temperature", finite(temp) ? temp.toFixed(1) + " °C" : "not available"],
        ["throttled", throttledText(pi.throttled)],
        ["load", Array.isArray(pi.load_average) ? pi.load_average.map((x) => fmt(x)).join(" ") : DASH],
        ["board", pi.model || DASH],
      ]);
      const body = $("#components tbody");
      const order = ["camera", "microphone", "face", "speech", "store", "hub"];
      const names = Object.keys(comps).sort((p, q) => (order.indexOf(p) + 1 || 99) - (order.indexOf(q) + 1 || 99) || p.localeCompare(q));
      body.replaceChildren(...names.map((name) => componentRow(name, comps[name] || {})));
      const models = $("#models tbody");
      models.replaceChildren(...(s.models || []).map((m) => el("tr", {},
        el("td", { text: m.name || DASH }), el("td", { text: m.version || DASH }),
        el("td", { class: "mono", title: m.sha256 || "", text: m.sha256 ? m.sha256.slice(0, 12) + "…" : DASH }))));
    }, STATUS_POLL_MS);
  }

  function sessionPage() {
    const errorBox = $("#session-error");
    let running = null; // the running session, or null
    let lastId = null;

    async function refresh() {
      let live;
      try {
        live = await api("/api/live?compact=1");
      } catch (error) {
        showError(errorBox, "Cannot reach the device: " + error.message);
        return;
      }
      render(live);
    }

    function render(live) {
      const session = live.session;
      $("#start-panel").hidden = !!session;
      $("#live-panel").hidden = !session;
      if (!session) {
        if (running) lastId = running.session_id;
        running = null;
        if (lastId) {
          $("#last-session").hidden = false;
          $("#last-session-link").href = "/history/session/" + encodeURIComponent(lastId);
        }
        return;
      }
      running = session;
      $("#live-patient").textContent = session.patient_id;
      $("#live-elapsed").textContent = clock(session.elapsed_s);
      $("#live-max").textContent = finite(session.max_duration_s) ? `of at most ${duration(session.max_duration_s)}` : "";
      const windows = live.windows || [];
      const lastMood = [...windows].reverse().find((w) => w.dominant);
      const last = windows[windows.length - 1];
      const mood = $("#live-mood");
      if (lastMood) {
        mood.dataset.label = lastMood.dominant;
        mood.style.borderLeftColor = colourOf(lastMood.dominant);
        $("#live-dominant").textContent = lastMood.dominant;
      } else {
        mood.dataset.label = "";
        mood.style.borderLeftColor = "#999";
        $("#live-dominant").textContent = windows.length ? "no mood estimate yet" : "waiting for the first window…";
      }
      const va = lastMood || last || {};
      $("#live-valence").textContent = signed(va.valence);
      $("#live-arousal").textContent = signed(va.arousal);
      $("#live-valence-meter").value = finite(va.valence) ? va.valence : 0;
      $("#live-arousal-meter").value = finite(va.arousal) ? va.arousal : 0;
      const now = live.now || {};
      sense("#sense-face", now.face_present, "found", "not found");
      sense("#sense-speech", now.speech_active, "speech", "silence");
      const box = $("#live-chart");
      const tEnd = Math.max(finite(session.elapsed_s) ? session.elapsed_s : 0, last ? last.end : 0, 60);
      const tStart = Math.max(0, windows.length ? Math.min(windows[0].start, tEnd - 60) : tEnd - 600);
      box.replaceChildren(windowChart(windows, tStart, tEnd, "valence and arousal over the last minutes"));
    }

    function sense(selector, value, yes, no) {
      const node = $(selector);
      node.dataset.on = value === true ? "yes" : value === false ? "no" : "unknown";
      node.querySelector("strong").textContent = value === true ? yes : value === false ? no : DASH;
    }

    $("#start-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = $("#start-button");
      button.disabled = true;
      showError(errorBox, "");
      const body = { patient_id: $("#patient-id").value.trim() };
      const consent = $("#consent");
      if (consent) body.consent = consent.checked;
      try {
        await api("/api/session/start", { method: "POST", body });
        $("#patient-id").value = "";
        if (consent) consent.checked = false;
        await refresh();
      } catch (error) {
        showError(errorBox, error.message);
      } finally {
        button.disabled = false;
      }
    });

    $("#stop-button").addEventListener("click", async () => {
      const button = $("#stop-button");
      button.disabled = true;
      showError(errorBox, "");
      try {
        const stopped = await api("/api/session/stop", { method: "POST", body: {} });
        if (stopped && stopped.session_id) lastId = stopped.session_id;
        await refresh();
        if (stopped && stopped.stored === false) showError(errorBox, stopped.pending || "storing is pending");
      } catch (error) {
        showError(errorBox, error.message);
      } finally {
        button.disabled = false;
      }
    });

    legend($("#live-legend"), VA_LEGEND.concat(LABEL_LEGEND()));
    poll(refresh, LIVE_POLL_MS);
  }

  function sessionRow(s, withPatient) {
    const summary = s.summary || {};
    const cells = [el("td", {}, el("a", { href: "/history/session/" + encodeURIComponent(s.id), text: when(s.started_utc) }))];
    if (withPatient) cells.push(el("td", {}, el("a", { href: "/history/patient/" + encodeURIComponent(s.patient_id), text: s.patient_id })));
    cells.push(el("td", {}, badge(s.state)));
    cells.push(el("td", { class: "num", text: duration(s.duration_s ?? summary.duration_s) }));
    const dominant = summary.dominant;
    cells.push(el("td", {}, dominant ? swatch(colourOf(dominant)) : null, dominant || DASH));
    cells.push(el("td", { class: "num", text: signed(summary.valence) }));
    cells.push(el("td", { class: "num", text: s.windows }));
    return el("tr", { dataset: { sessionId: s.id } }, ...cells);
  }

  async function historyPage() {
    const form = $("#patient-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("#patient-filter").value.trim();
      if (id) location.assign("/history/patient/" + encodeURIComponent(id));
    });
    try {
      const data = await api("/api/sessions?limit=100");
      const body = $("#sessions tbody");
      if (!data.sessions.length) {
        body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No sessions recorded yet." })));
      } else {
        body.replaceChildren(...data.sessions.map((s) => sessionRow(s, true)));
      }
    } catch (error) {
      showError($("#history-error"), error.message);
    }
  }

  const PROSODY_NAMES = {
    f0_mean_hz: ["mean pitch", "Hz", 0], f0_sd_st: ["pitch movement", "st", 2], speaking_rate: ["speaking rate", "syl/s", 2],
    pause_ratio: ["pause ratio", "", 2], mean_pause_s: ["mean pause", "s", 2],
  };

  async function sessionDetailPage() {
    const id = document.body.dataset.sessionId;
    let data;
    try {
      data = await api("/api/sessions/" + encodeURIComponent(id));
    } catch (error) {
      showError($("#detail-error"), error.message);
      return;
    }
    const s = data.session;
    const summary = data.summary || {};
    facts($("#detail-facts"), [
      ["started", when(s.started_utc)], ["ended", when(s.ended_utc)], ["state", badge(s.state)],
      ["end reason", s.end_reason || DASH], ["duration", duration(s.duration_s ?? summary.duration_s)],
      ["windows", s.windows], ["consent recorded", s.consent ? "yes" : "no"], ["device", s.device_id],
    ]);
    const windows = data.windows || [];
    const t1 = Math.max(summary.duration_s || 0, windows.length ? windows[windows.length - 1].end : 0, 10);
    $("#detail-chart").replaceChildren(windows.length ? windowChart(windows, 0, t1, "valence and arousal over the session")
      : el("p", { class: "muted", text: "No windows were stored for this session." }));
    legend($("#detail-legend"), VA_LEGEND.concat(LABEL_LEGEND()));
    const coverage = summary.coverage || {};
    const prosody = summary.prosody || {};
    const rows = [
      ["dominant mood", summary.dominant || "no mood estimate"],
      ["valence (mean ± SD across windows)", finite(summary.valence) ? `${signed(summary.valence)} ± ${fmt(summary.valence_sd)}` : DASH],
      ["arousal (mean ± SD)", finite(summary.arousal) ? `${signed(summary.arousal)} ± ${fmt(summary.arousal_sd)}` : DASH],
      ["windows with a mood", `${summary.windows_with_mood ?? DASH} of ${summary.windows ?? DASH}`],
      ["face found in", pct((coverage.face || {}).share)], ["speech in", pct((coverage.speech || {}).share)],
    ];
    const speakers = summary.speakers;
    if (speakers) {
      rows.push(["speech of other voices", speakers.attributed
        ? `${fmt(speakers.other_s, 1)} s (${pct(speakers.other_share)} of the speech), left out of the analysis`
        : "not told apart: no voices enrolled, all speech analysed as the patient's"]);
    }
    for (const [key, [name, unit, digits]] of Object.entries(PROSODY_NAMES)) {
      if (finite(prosody[key])) rows.push([name, `${prosody[key].toFixed(digits)} ${unit}`.trim()]);
    }
    const dw = summary.dominant_windows || {};
    const spread = Object.entries(dw).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(", ");
    rows.push(["windows per dominant mood", spread || DASH]);
    facts($("#summary-facts"), rows);
    const dev = data.deviation;
    if (dev && dev.fields && Object.keys(dev.fields).length) {
      const table = el("table", { class: "data", id: "deviation-table" },
        el("thead", {}, el("tr", {}, el("th", { text: "measure" }), el("th", { class: "num", text: "this session" }),
          el("th", { class: "num", text: "usual (mean ± SD)" }), el("th", { class: "num", text: "z" }))));
      const tbody = el("tbody");
      for (const [name, f] of Object.entries(dev.fields)) {
        tbody.append(el("tr", {}, el("td", { text: name.replaceAll("_", " ") }), el("td", { class: "num", text: fmt(f.value) }),
          el("td", { class: "num", text: `${fmt(f.mean)} ± ${fmt(f.sd)}` }), el("td", { class: "num", text: signed(f.z, 1) })));
      }
      table.append(tbody);
      $("#deviation").replaceChildren(el("p", { class: "meta", text: `Against ${dev.baseline_n} earlier sessions. A z-score says how unusual this session is for this patient; it is not a clinical threshold.` }), table);
    }
  }

  async function patientPage() {
    const patient = document.body.dataset.patientId;
    const params = new URLSearchParams(location.search);
    let period = ["week", "month", "year"].includes(params.get("period")) ? params.get("period") : "month";
    for (const button of document.querySelectorAll("button.period")) {
      button.addEventListener("click", () => { period = button.dataset.period; load(); });
    }

    async function load() {
      for (const button of document.querySelectorAll("button.period")) {
        button.setAttribute("aria-pressed", String(button.dataset.period === period));
      }
      history.replaceState(null, "", "?period=" + period);
      let data;
      try {
        data = await api(`/api/patients/${encodeURIComponent(patient)}/trend?period=${period}`);
      } catch (error) {
        showError($("#trend-error"), error.message);
        return;
      }
      showError($("#trend-error"), "");
      draw(data);
    }

    function draw(data) {
      const sessions = data.sessions || [];
      const times = sessions.map((s) => new Date(s.started_utc).getTime());
      $("#trend-meta").textContent = sessions.length
        ? `${sessions.length} session${sessions.length === 1 ? "" : "s"} from ${when(sessions[0].started_utc)} to ${when(sessions[sessions.length - 1].started_utc)}`
        : "No ended sessions yet.";
      const day = 86400000;
      const x0 = times.length ? Math.min(...times) - day / 2 : 0;
      const x1 = times.length ? Math.max(...times) + day / 2 : day;
      const xTicks = dateTicks(x0, x1);
      const periodPoints = (data.periods || []).map((p) => {
        const inside = sessions.map((s, i) => [s, times[i]]).filter(([s]) => periodKeyMatches(s, p));
        const mid = inside.length ? inside.reduce((a, [, t]) => a + t, 0) / inside.length : new Date(p.start).getTime();
        return [mid, p];
      });
      const valenceDots = sessions.map((s, i) => ({ x: times[i], y: s.valence, colour: colourOf(s.dominant),
        title: `${when(s.started_utc)}: valence ${signed(s.valence)}, ${s.dominant || "no mood"}` }));
      $("#trend-valence").replaceChildren(chart({
        width: 900, height: 240, x: [x0, x1], y: [-1, 1], yTicks: [-1, -0.5, 0, 0.5, 1], zero: true, xTicks,
        label: "valence per session and per period", dots: valenceDots,
        lines: [{ name: "period mean", colour: "#333", width: 1.6, dash: "5 4", markers: true, points: periodPoints.map(([t, p]) => [t, p.valence]) }],
      }));
      legend($("#trend-legend"), LABEL_INFO.map((x) => [x.label, x.colour]).concat([["period mean", "#333", true]]));
      const sds = sessions.map((s) => s.valence_sd).filter(finite);
      const sdMax = Math.max(0.2, ...sds) * 1.15; // headroom: the largest dot stays inside the plot
      const sdTicks = niceTicks(0, sdMax);
      $("#trend-variability").replaceChildren(chart({
        width: 900, height: 170, x: [x0, x1], y: [0, sdMax], yTicks: sdTicks, xTicks, yFormat: (v) => v.toFixed(2),
        label: "variability of valence within each session",
        dots: sessions.map((s, i) => ({ x: times[i], y: s.valence_sd, colour: "#555", r: 4, title: `${when(s.started_utc)}: ${fmt(s.valence_sd)}` })),
        lines: [{ name: "period mean", colour: "#333", width: 1.4, dash: "5 4", points: periodPoints.map(([t, p]) => [t, p.valence_within_sd]) }],
      }));
      const box = $("#trend-prosody");
      box.replaceChildren();
      let any = false;
      for (const key of ["f0_mean_hz", "f0_sd_st", "speaking_rate", "pause_ratio"]) {
        const values = sessions.map((s) => (s.prosody || {})[key]);
        const present = values.filter(finite);
        if (!present.length) continue;
        any = true;
        const [name, unit, digits] = PROSODY_NAMES[key];
        let lo = Math.min(...present), hi = Math.max(...present);
        const pad = (hi - lo) * 0.15 || Math.abs(hi) * 0.1 || 1;
        lo -= pad; hi += pad;
        if (key === "pause_ratio") { lo = Math.max(0, lo); hi = Math.min(1, hi); }
        box.append(el("p", { class: "meta", text: `${name}${unit ? " (" + unit + ")" : ""}` }));
        box.append(chart({
          width: 900, height: 130, x: [x0, x1], y: [lo, hi], yTicks: niceTicks(lo, hi), xTicks, yFormat: (v) => v.toFixed(digits),
          label: name, dots: values.map((v, i) => ({ x: times[i], y: v, colour: CHART_COLOURS.face, r: 4, title: `${when(sessions[i].started_utc)}: ${fmt(v, digits)}` })),
        }));
      }
      if (!any) box.append(el("p", { class: "muted", text: "No speech in these sessions, so no prosody." }));
      $("#periods tbody").replaceChildren(...(data.periods || []).map((p) => el("tr", { dataset: { period: p.period } },
        el("td", { text: p.period }), el("td", { class: "num", text: p.sessions }), el("td", { class: "num", text: signed(p.valence) }),
        el("td", { class: "num", text: fmt(p.valence_between_sd) }), el("td", { class: "num", text: fmt(p.valence_within_sd) }),
        el("td", {}, p.dominant ? swatch(colourOf(p.dominant)) : null, p.dominant || DASH),
        el("td", { class: "num", text: fmt((p.prosody || {}).f0_mean_hz, 0) }), el("td", { class: "num", text: fmt((p.prosody || {}).speaking_rate) }),
        el("td", { class: "num", text: fmt((p.prosody || {}).pause_ratio) }))));
      $("#patient-sessions tbody").replaceChildren(...[...sessions].reverse().map((s) => el("tr", { dataset: { sessionId: s.session_id } },
        el("td", {}, el("a", { href: "/history/session/" + encodeURIComponent(s.session_id), text: when(s.started_utc) })),
        el("td", {}, badge(s.state)), el("td", { class: "num", text: duration(s.duration_s) }),
        el("td", {}, s.dominant ? swatch(colourOf(s.dominant)) : null, s.dominant || DASH),
        el("td", { class: "num", text: signed(s.valence) }), el("td", { class: "num", text: fmt(s.valence_sd) }))));
    }

    load();
  }

  function periodKeyMatches(session, period) {
    const d = new Date(session.started_utc);
    const key = period.period;
    if (/^\d{4}$/.test(key)) return String(d.getUTCFullYear()) === key;
    if (/^\d{4}-\d{2}$/.test(key)) return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}` === key;
    const start = new Date(period.start + "T00:00:00Z").getTime();
    return d.getTime() >= start && d.getTime() < start + 7 * 86400000;
  }

  function niceTicks(lo, hi) {
    const span = hi - lo || 1;
    const raw = span / 3;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(Math.round(v / step) * step);
    return ticks;
  }

  function dateTicks(x0, x1) {
    const day = 86400000;
    const span = x1 - x0;
    const count = 6;
    const step = Math.max(day, Math.ceil(span / count / day) * day);
    const ticks = [];
    for (let t = Math.ceil(x0 / step) * step; t <= x1; t += step) {
      ticks.push([t, new Date(t).toLocaleDateString(undefined, { month: "short", day: "numeric", year: span > 300 * day ? "2-digit" : undefined })]);
    }
    return ticks;
  }

  function logoutButton() {
    const button = $("#logout");
    if (!button) return;
    button.addEventListener("click", async () => {
      try {
        await api("/api/logout", { method: "POST", body: {}, noRedirect: true });
      } finally {
        location.assign("/login");
      }
    });
  }

  const pages = { login: loginPage, status: statusPage, session: sessionPage, history: historyPage,
    "session-detail": sessionDetailPage, patient: patientPage };
  logoutButton();
  const run = pages[document.body.dataset.page];
  if (run) run();
})();
