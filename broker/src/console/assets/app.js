// The Skiff console: plain JavaScript over the broker's admin API, no build step and no
// network access beyond this broker.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function row(...cells) {
  return el("tr", {}, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
}

async function getJson(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${path}: ${response.status}`);
  return body;
}

// Changes go as JSON bodies (a page of another origin cannot send those without asking).
async function send(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `${path}: ${response.status}`);
  return answer;
}

function say(id, text, isError) {
  $(id).textContent = text;
  $(id).className = isError ? "message error" : "message";
}

// "a=1, b=2" or one per line → {a: "1", b: "2"}
function parseConfigs(text) {
  const configs = {};
  for (const part of (text || "").split(/[,\n]/)) {
    const [k, ...v] = part.split("=");
    if (k.trim()) configs[k.trim()] = v.join("=").trim();
  }
  return configs;
}

function utc(ms) {
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

// ---- bytes as text, JSON or hex -------------------------------------------------------------
function hexToBytes(hex) {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(i * 2, 2), 16);
  return bytes;
}

function show(hex, format) {
  if (hex === null || hex === undefined) return "null";
  if (format === "hex") return hex;
  const text = new TextDecoder("utf-8", { fatal: false }).decode(hexToBytes(hex));
  if (format === "json") {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
  }
  return text;
}

// ---- brokers and topics ---------------------------------------------------------------------
let topics = [];

async function loadBrokersAndTopics(force) {
  const [{ brokers }, topicList] = await Promise.all([getJson("/v1/brokers"), getJson("/v1/topics")]);
  topics = topicList.topics;
  const led = {};
  for (const t of topics) for (const p of t.partitions) led[p.leader] = (led[p.leader] || 0) + 1;
  $("brokers-body").replaceChildren(
    ...brokers.map((b) => row(b.node_id, `${b.host}:${b.port}`, b.rack ?? "-", led[b.node_id] || 0)));
  $("topics-body").replaceChildren(...topics.map((t) => {
    const records = t.partitions.reduce((n, p) => n + (p.high_watermark - p.log_start_offset), 0);
    const name = el("a", { href: `#topics/${encodeURIComponent(t.name)}`, class: "topic-link" }, t.name);
    const configs = Object.entries(t.configs || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "defaults";
    return row(el("td", {}, name), t.partitions.length, records, configs);
  }));
  const select = $("browse-topic");
  const chosen = select.value;
  select.replaceChildren(...topics.map((t) => el("option", {}, t.name)));
  if (chosen) select.value = chosen;
  showTopic(force);
}

function showTopic(force) {
  if (!force && $("topic-detail").contains(document.activeElement)) return;
  const m = location.hash.match(/^#topics\/(.+)$/);
  const topic = m && topics.find((t) => t.name === decodeURIComponent(m[1]));
  if (!topic) { $("topic-detail").replaceChildren(); return; }
  const configs = Object.entries(topic.configs || {});
  const setForm = el("form", { id: "set-configs", class: "action" },
    el("strong", {}, "Set configs "),
    el("input", { name: "configs", placeholder: "retention.ms=3600000", size: "40" }),
    el("button", { type: "submit" }, "Set"));
  setForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await send("POST", `/v1/topics/${encodeURIComponent(topic.name)}/configs`,
        { set: parseConfigs(setForm.elements.configs.value) });
      say("topics-message", `configs of ${topic.name} changed`);
      await loadBrokersAndTopics(true);
    } catch (error) { say("topics-message", error.message, true); }
  });
  const remove = (name) => {
    const button = el("button", { type: "button", class: "remove-config", "data-config": name }, "remove");
    button.addEventListener("click", async () => {
      try {
        await send("POST", `/v1/topics/${encodeURIComponent(topic.name)}/configs`, { delete: [name] });
        say("topics-message", `${name} of ${topic.name} back to its default`);
        await loadBrokersAndTopics(true);
      } catch (error) { say("topics-message", error.message, true); }
    });
    return el("td", {}, button);
  };
  const drop = el("button", { type: "button", id: "delete-topic", class: "danger" }, `Delete ${topic.name}`);
  drop.addEventListener("click", async () => {
    if (!confirm(`Delete topic ${topic.name} and all its records?`)) return;
    try {
      await send("DELETE", `/v1/topics/${encodeURIComponent(topic.name)}`);
      say("topics-message", `topic ${topic.name} deleted`);
      location.hash = "#topics";
      await loadBrokersAndTopics(true);
    } catch (error) { say("topics-message", error.message, true); }
  });
  $("topic-detail").replaceChildren(
    el("h3", {}, `Partitions of ${topic.name}`),
    el("table", {},
      el("thead", {}, row("Partition", "Leader", "Leader epoch", "Log start offset", "High watermark")),
      el("tbody", {}, ...topic.partitions.map((p) =>
        row(p.partition, p.leader, p.leader_epoch, p.log_start_offset, p.high_watermark)))),
    el("h3", {}, `Configs of ${topic.name}`),
    el("table", { id: "topic-configs" },
      el("thead", {}, row("Config", "Value", "")),
      el("tbody", {}, ...configs.map(([k, v]) => row(k, v, remove(k))))),
    setForm, drop);
}

$("create-topic").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  try {
    await send("POST", "/v1/topics", {
      name: form.elements.name.value,
      partitions: Number(form.elements.partitions.value),
      configs: parseConfigs(form.elements.configs.value),
    });
    say("topics-message", `topic ${form.elements.name.value} created`);
    await loadBrokersAndTopics();
  } catch (error) { say("topics-message", error.message, true); }
});

// ---- message browser ------------------------------------------------------------------------
async function browse(params) {
  const query = new URLSearchParams({ topic: params.topic, partition: params.partition, limit: params.limit || 50 });
  if (params.from === "timestamp" && params.at) query.set("timestamp", Date.parse(params.at.endsWith("Z") ? params.at : params.at + "Z"));
  else if (params.at !== undefined && params.at !== "") query.set("offset", params.at);
  $("browse-error").textContent = "";
  try {
    const { records } = await getJson(`/v1/records?${query}`);
    const format = params.format || "text";
    $("messages-body").replaceChildren(...records.map((r) => row(
      r.offset, utc(r.timestamp),
      el("td", { class: "value" }, show(r.key, format)),
      el("td", { class: "value" }, show(r.value, format)),
      el("td", { class: "value" }, r.headers.map(([k, v]) => `${k}=${show(v, format)}`).join("\n")))));
    if (!records.length) $("browse-error").textContent = "no records there";
  } catch (error) {
    $("browse-error").textContent = error.message;
  }
}

$("browse").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = Object.fromEntries(new FormData(event.target));
  location.hash = "#messages?" + new URLSearchParams(params);
});

function browseFromHash() {
  const m = location.hash.match(/^#messages\?(.*)$/);
  if (!m) return;
  const params = Object.fromEntries(new URLSearchParams(m[1]));
  const form = $("browse");
  for (const [k, v] of Object.entries(params)) if (form.elements[k]) form.elements[k].value = v;
  if (params.topic) {
    if (![...$("browse-topic").options].some((o) => o.value === params.topic)) {
      $("browse-topic").append(el("option", {}, params.topic));
      $("browse-topic").value = params.topic;
    }
    browse(params);
  }
}

// ---- consumer groups ------------------------------------------------------------------------
// A form being filled in is not redrawn under the user's hands (unless `force`).
async function loadGroups(force) {
  if (!force && $("groups-body").contains(document.activeElement)) return;
  const { groups } = await getJson("/v1/groups");
  $("groups-body").replaceChildren(...groups.map((g) => {
    const members = (g.members || []).map((m) => row(m.member_id, m.client_id, m.group_instance_id ?? "-",
      (m.assignment || []).map((a) => `${a.topic}: ${a.partitions.join(",")}`).join("; ")));
    const offsets = (g.offsets || []).map((o) => row(o.topic, o.partition, o.committed_offset,
      o.high_watermark ?? "-", el("td", { class: "lag" }, o.lag ?? "-")));
    const lag = (g.offsets || []).reduce((n, o) => n + (o.lag || 0), 0);
    return el("div", { class: "group", "data-group": g.group_id },
      el("h3", {}, `${g.group_id} — ${g.state ?? "no members"}, coordinator ${g.coordinator ?? "-"}, total lag ${lag}`),
      el("table", {}, el("thead", {}, row("Member", "Client", "Static instance", "Assignment")), el("tbody", {}, ...members)),
      el("table", {}, el("thead", {}, row("Topic", "Partition", "Committed offset", "High watermark", "Lag")),
        el("tbody", {}, ...offsets)),
      resetForm(g.group_id));
  }));
  if (!groups.length) $("groups-body").replaceChildren(el("p", { class: "muted" }, "no consumer groups"));
}

// Reset an inactive group's offsets: preview (a dry run), then apply, as `skiff group
// reset-offsets` does.
function resetForm(group) {
  const to = el("select", { name: "to" }, ...["earliest", "latest", "offset", "datetime", "shift"].map((t) => el("option", {}, t)));
  const form = el("form", { class: "action reset", "data-group": group },
    el("strong", {}, "Reset offsets "),
    el("label", {}, "Topic ", el("input", { name: "topic", placeholder: "all topics, or topic[:0,2]" })),
    el("label", {}, "To ", to),
    el("label", {}, "Value ", el("input", { name: "value", placeholder: "offset, 2026-12-06T10:00:00 or ±N" })),
    el("button", { type: "submit", name: "preview", value: "preview" }, "Preview"),
    el("button", { type: "submit", name: "apply", value: "apply" }, "Apply"),
    el("div", { class: "plan" }));
  let applying = false;
  form.elements.apply.addEventListener("click", () => { applying = true; });
  form.elements.preview.addEventListener("click", () => { applying = false; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { to: form.elements.to.value, execute: applying };
    if (form.elements.topic.value) body.topic = form.elements.topic.value;
    if (form.elements.value.value) body.value = form.elements.value.value;
    try {
      const plan = await send("POST", `/v1/groups/${encodeURIComponent(group)}/reset-offsets`, body);
      form.querySelector(".plan").replaceChildren(el("table", {},
        el("thead", {}, row("Topic", "Partition", "Current offset", "New offset")),
        el("tbody", {}, ...plan.offsets.map((o) => row(o.topic, o.partition, o.current_offset ?? "-", o.new_offset)))));
      const failed = plan.failures.map(([p, why]) => `${p}: ${why}`).join("; ");
      say("groups-message", failed ? `not all committed: ${failed}` :
        plan.executed ? `offsets of ${group} reset` : `preview only: nothing changed`, !!failed);
      if (plan.executed) await loadGroups(true);
    } catch (error) { say("groups-message", error.message, true); }
  });
  return form;
}

// ---- bucket requests over time --------------------------------------------------------------
const samples = [];

async function loadBucket() {
  const { object_store: counts } = await getJson("/v1/stats");
  const now = Date.now();
  samples.push({ at: now, counts });
  while (samples.length > 120) samples.shift();
  const previous = samples.length > 1 ? samples[samples.length - 2] : null;
  const ops = [["PUT", "puts", "put_bytes"], ["GET", "gets", "get_bytes"], ["LIST", "lists"], ["DELETE", "deletes"], ["COPY", "copies"]];
  $("bucket-body").replaceChildren(...ops.map(([name, requests, bytes]) => {
    const rate = previous ? ((counts[requests] - previous.counts[requests]) * 1000 / (now - previous.at)).toFixed(2) : "-";
    return row(name, counts[requests], bytes ? counts[bytes] : "-", rate);
  }));
  drawChart();
}

function drawChart() {
  const svg = $("bucket-chart");
  const w = +svg.getAttribute("width"), h = +svg.getAttribute("height");
  const series = [["puts", "#2b6cb0"], ["gets", "#2f855a"]];
  const rates = series.map(([key]) => samples.slice(1).map((s, i) =>
    (s.counts[key] - samples[i].counts[key]) * 1000 / Math.max(1, s.at - samples[i].at)));
  const max = Math.max(1, ...rates.flat());
  svg.replaceChildren(...series.map(([key, color], k) => {
    const points = rates[k].map((r, i) => `${(i / 119) * w},${h - (r / max) * (h - 10)}`).join(" ");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points);
    line.setAttribute("stroke", color);
    line.setAttribute("data-series", key);
    return line;
  }));
}

// ---- refresh --------------------------------------------------------------------------------
async function refresh() {
  try {
    await Promise.all([loadBrokersAndTopics(), loadGroups(), loadBucket()]);
    $("status").textContent = `updated ${utc(Date.now())} UTC`;
  } catch (error) {
    $("status").textContent = `cannot reach the broker: ${error.message}`;
  }
}

window.addEventListener("hashchange", () => { showTopic(true); browseFromHash(); });
refresh().then(browseFromHash);
setInterval(refresh, 5000);
