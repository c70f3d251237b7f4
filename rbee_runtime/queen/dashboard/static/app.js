// rbee dashboard: polls /ui/api/state, draws it, and streams chat replies through /v1/chat/completions.
// Everything from the server is written with textContent (never as HTML).
"use strict";

const POLL_MS = 1000;
const KEY = "rbee-api-key";
const $ = (id) => document.getElementById(id);

let pollTimer = null;
let lastState = null;

// ------------------------------------------------------------------ API key (sessionStorage)

function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askForKey(message) {
  const dialog = $("key-dialog");
  $("key-error").hidden = !message;
  $("key-error").textContent = message || "";
  $("key-input").value = "";
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  $("key-dialog").close();
  poll();
});

$("key-dialog").addEventListener("cancel", (event) => event.preventDefault());

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  poll();
});

// ------------------------------------------------------------------ formatting

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function gib(bytes) {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function clock(wall) {
  return new Date(wall * 1000).toLocaleTimeString();
}

function firstLine(text) {
  return (text || "").trim().split("\n")[0];
}

// ------------------------------------------------------------------ drawing the state

function setLive(text, ok) {
  const live = $("live");
  live.textContent = text;
  live.className = `badge ${ok ? "ok" : "bad"}`;
}

function drawSummary(state) {
  const r = state.rates;
  const busy = state.workers.reduce((n, w) => n + w.slots_busy, 0);
  const total = state.workers.filter((w) => w.routable).reduce((n, w) => n + w.slots_total, 0);
  const queued = state.models.reduce((n, m) => n + m.queued, 0);
  const items = [
    ["hosts", `${state.hosts.filter((h) => h.status === "online").length}/${state.hosts.length} online`],
    ["slots", `${busy}/${total} busy`],
    ["queued", queued],
    ["tokens/s", r.tokens_per_s.toFixed(1)],
    ["first token p50", seconds(r.ttft_p50_s)],
    ["p95", seconds(r.ttft_p95_s)],
  ];
  const box = $("summary");
  box.replaceChildren(...items.map(([label, value]) => {
    const item = el("span", null, "stat");
    item.append(el("b", value), el("small", label));
    return item;
  }));
}

function gpuLine(gpu) {
  const row = el("div", null, "gpu");
  row.append(el("span", `GPU ${gpu.index} ${gpu.name}${gpu.mig ? " (MIG)" : ""}`, "gpu-name"));
  if (gpu.memory_total_bytes > 0) {
    const used = gpu.memory_total_bytes - gpu.memory_free_bytes;
    const bar = el("meter");
    bar.min = 0;
    bar.max = gpu.memory_total_bytes;
    bar.value = used;
    row.append(bar, el("span", `${gib(used)} used, ${gib(gpu.memory_free_bytes)} free`));
  } else {
    row.append(el("span", "memory not reported", "muted"));
  }
  const temp = gpu.temperature_c === null || gpu.temperature_c === undefined ? "? °C" : `${gpu.temperature_c} °C`;
  row.append(el("span", temp, gpu.temperature_c >= 80 ? "hot" : "temp"));
  return row;
}

function drawHosts(hosts) {
  const box = $("hosts");
  if (!hosts.length) {
    box.replaceChildren(el("p", "No hive has sent a heartbeat yet.", "muted"));
    return;
  }
  box.replaceChildren(...hosts.map((h) => {
    const card = el("article", null, `card ${h.status}`);
    card.dataset.hiveId = h.hive_id;
    const title = el("h3", `${h.hive_id} `);
    title.append(el("span", h.status, `badge ${h.status === "online" ? "ok" : "bad"}`));
    card.append(title);
    card.append(el("p", `${h.host} · rbee ${h.version} · heartbeat ${h.last_heartbeat_age_s.toFixed(1)}s ago`, "muted"));
    card.append(el("p", `${h.cpu_count} CPUs · RAM ${gib(h.ram_available_bytes)} free of ${gib(h.ram_total_bytes)} · ` +
      `workers ${h.workers}/${h.max_workers} · ${h.backends.join(", ")}`));
    if (h.gpus.length) {
      card.append(...h.gpus.map(gpuLine));
    } else {
      card.append(el("p", "CPU only", "cpu-only"));
    }
    return card;
  }));
}

function drawWorkers(workers) {
  const body = $("workers").tBodies[0];
  if (!workers.length) {
    const row = el("tr");
    const cell = el("td", "No workers.", "muted");
    cell.colSpan = 9;
    row.append(cell);
    body.replaceChildren(row);
    return;
  }
  body.replaceChildren(...workers.map((w) => {
    const row = el("tr");
    row.dataset.workerId = w.worker_id;
    row.dataset.state = w.state;
    const state = w.status === "stale" ? `${w.state} (hive stale)` : w.state;
    const device = w.backend === "cpu" ? "cpu" : `${w.backend}:${w.device}`;
    row.append(
      el("td", w.worker_id), el("td", w.model_id), el("td", w.hive_id), el("td", device),
      el("td", `${w.slots_busy}/${w.slots_total}`),
      el("td", state, `state ${w.state}${w.status === "stale" ? " stale" : ""}`),
      el("td", duration(w.uptime_s)), el("td", w.restarts),
    );
    const error = el("td", firstLine(w.last_error), "last-error");
    if (w.last_error) error.title = w.last_error;
    row.append(error);
    return row;
  }));
}

function drawModels(models) {
  const body = $("models").tBodies[0];
  body.replaceChildren(...models.map((m) => {
    const row = el("tr");
    row.dataset.modelId = m.model_id;
    row.append(
      el("td", m.model_id), el("td", m.workers), el("td", `${m.slots_busy}/${m.slots_total}`),
      el("td", m.queued, m.queued > 0 ? "queued" : ""), el("td", m.tokens_per_s.toFixed(1)),
      el("td", m.requests_per_s.toFixed(2)), el("td", seconds(m.ttft_avg_s)),
    );
    return row;
  }));
  const select = $("pg-model");
  const chosen = select.value;
  const names = models.map((m) => m.model_id);
  const current = [...select.options].map((o) => o.value);
  if (names.join("\n") !== current.join("\n")) {
    select.replaceChildren(...names.map((name) => el("option", name)));
    if (names.includes(chosen)) select.value = chosen;
  }
}

const CHART_S = 600; // the charts show the last 10 minutes

function drawChart(canvas, points, now, step, color) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const shown = points.filter((p) => p.y !== null && now - p.x < CHART_S);
  const top = Math.max(1e-9, ...shown.map((p) => p.y));
  g.fillStyle = "#8a93a6";
  g.font = "11px sans-serif";
  g.fillText(shown.length ? `max ${top.toFixed(top < 10 ? 2 : 0)}` : "no data yet", 4, 12);
  g.fillText("-10 min", 4, height - 4);
  g.fillText("now", width - 26, height - 4);
  const barWidth = Math.max(2, (step / CHART_S) * width - 1);
  g.fillStyle = color;
  for (const p of shown) {
    const x = width - ((now - p.x) / CHART_S) * width - barWidth;
    const h = (p.y / top) * (height - 30);
    g.fillRect(x, height - 16 - h, barWidth, Math.max(1, h));
  }
}

function drawTraffic(rates) {
  $("traffic-window").textContent =
    `last minute: ${rates.requests_per_s.toFixed(2)} req/s, ${rates.errors} errors · first token over ` +
    `${Math.round(rates.ttft_window_s / 60)} min: avg ${seconds(rates.ttft_avg_s)}`;
  const now = lastState.now;
  drawChart($("chart-tokens"), rates.series.map((p) => ({ x: p.at, y: p.tokens_per_s })), now, rates.step_s, "#f5b800");
  drawChart($("chart-ttft"), rates.series.map((p) => ({ x: p.at, y: p.ttft_avg_s })), now, rates.step_s, "#4fa3ff");
}

function drawErrors(errors) {
  const list = $("errors");
  if (!errors.length) {
    list.replaceChildren(el("li", "No errors.", "muted"));
    return;
  }
  list.replaceChildren(...errors.map((e) => {
    const item = el("li");
    item.dataset.source = e.source;
    item.append(el("time", clock(e.at)), el("span", e.source, `badge ${e.source}`), el("span", e.message));
    return item;
  }));
}

function draw(state) {
  lastState = state;
  $("queen-id").textContent = `queen ${state.queen_id} · ${state.version}`;
  $("forget-key").hidden = !state.api_keys;
  drawSummary(state);
  drawHosts(state.hosts);
  drawWorkers(state.workers);
  drawModels(state.models);
  drawTraffic(state.rates);
  drawErrors(state.errors);
}

// ------------------------------------------------------------------ polling

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? `${body.error.message} [${body.error.code}]` : `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function poll() {
  clearTimeout(pollTimer);
  pollTimer = null;
  let response;
  try {
    response = await fetch("/ui/api/state", { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    setLive("queen unreachable, retrying", false);
    pollTimer = setTimeout(poll, POLL_MS * 3);
    return;
  }
  if (response.status === 401) {
    const hadKey = Boolean(apiKey());
    sessionStorage.removeItem(KEY);
    setLive("API key needed", false);
    askForKey(hadKey ? await errorMessage(response) : "");
    return; // polling resumes once a key is given
  }
  if (!response.ok) {
    setLive(await errorMessage(response), false);
    pollTimer = setTimeout(poll, POLL_MS * 3);
    return;
  }
  draw(await response.json());
  setLive(`live · ${new Date().toLocaleTimeString()}`, true);
  pollTimer = setTimeout(poll, POLL_MS);
}

// ------------------------------------------------------------------ playground

let running = null;

async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) yield data;
    }
  }
}

async function chat(event) {
  event.preventDefault();
  if (running) return;
  const output = $("pg-output");
  const stats = $("pg-stats");
  output.textContent = "";
  output.classList.remove("error");
  const model = $("pg-model").value;
  if (!model) {
    stats.textContent = "No model to talk to yet.";
    return;
  }
  running = new AbortController();
  $("pg-send").disabled = true;
  $("pg-stop").disabled = false;
  const started = performance.now();
  let first = null;
  let chunks = 0;
  stats.textContent = `waiting for ${model}…`;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({
        model,
        stream: true,
        max_tokens: Number($("pg-max-tokens").value) || 64,
        messages: [{ role: "user", content: $("pg-prompt").value }],
      }),
      signal: running.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(`${chunk.error.message} [${chunk.error.code}]`);
      const piece = chunk.choices && chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
      if (piece) {
        if (first === null) first = performance.now();
        chunks += 1;
        output.append(document.createTextNode(piece));
        stats.textContent = `streaming… ${chunks} chunks`;
      }
    }
    const total = (performance.now() - started) / 1000;
    const ttft = first === null ? null : (first - started) / 1000;
    stats.textContent = `done: ${chunks} chunks in ${total.toFixed(2)} s, first token after ${seconds(ttft)}`;
  } catch (err) {
    if (err.name === "AbortError") {
      stats.textContent = "stopped";
    } else {
      output.classList.add("error");
      output.append(document.createTextNode(`\n${err.message}`));
      stats.textContent = "failed";
    }
  } finally {
    running = null;
    $("pg-send").disabled = false;
    $("pg-stop").disabled = true;
    output.dataset.done = "true";
  }
}

$("playground").addEventListener("submit", (event) => {
  $("pg-output").dataset.done = "false";
  chat(event);
});
$("pg-stop").addEventListener("click", () => running && running.abort());
window.addEventListener("resize", () => lastState && drawTraffic(lastState.rates));

poll();
