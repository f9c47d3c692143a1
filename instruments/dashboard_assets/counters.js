"use strict";
const SVG = "http://www.w3.org/2000/svg";

function format(value, kind) {
  if (value === null || value === undefined) return "—";
  if (kind === "ratio") return (value * 100).toFixed(1) + "%";
  if (kind === "bytes") {
    if (value < 1024) return value + " B";
    if (value < 1048576) return (value / 1024).toFixed(1) + " KB";
    return (value / 1048576).toFixed(1) + " MB";
  }
  return value.toLocaleString("en-US");
}

function renderTable(data) {
  const heads = $("heads");
  heads.replaceChildren(cell("th", ""), ...data.columns.map((c) => cell("th", c.name)));
  $("rows").replaceChildren(...data.rows.map((row) => {
    const tr = document.createElement("tr");
    tr.append(cell("th", row.label));
    for (const c of data.columns) {
      const td = cell("td", format(c.values ? c.values[row.key] : null, row.kind),
                      {"data-stat": row.key, "data-server": c.name});
      if (!c.up) td.className = "down";
      tr.append(td);
    }
    return tr;
  }));
}

function line(points, color) {
  const el = document.createElementNS(SVG, "polyline");
  el.setAttribute("points", points.map((p) => p.join(",")).join(" "));
  el.setAttribute("fill", "none");
  el.setAttribute("stroke", color);
  el.setAttribute("stroke-width", "2");
  el.setAttribute("stroke-linejoin", "round");
  return el;
}

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function renderChart(data) {
  const chart = $("chart");
  const left = 34, right = 372, top = 8, bottom = 168;
  const history = data.history;
  const top_value = Math.max(2, ...history.map((h) => Math.max(h[1], h[2])));
  const peak = top_value + (top_value % 2);  // even, so the middle line is a whole number
  const end = history.length ? history[history.length - 1][0] : 0;
  // The window grows from 30 s to the full 3 minutes, so the first clicks are not a sliver.
  const span = Math.min(data.window, Math.max(30, Math.ceil(end / 30) * 30));
  const x = (t) => right - (end - t) / span * (right - left);
  const y = (v) => bottom - v / peak * (bottom - top);
  const parts = [];
  for (const v of [0, peak / 2, peak]) {
    parts.push(svgEl("line", {x1: left, x2: right, y1: y(v), y2: y(v), stroke: "#e4e7eb"}));
    parts.push(svgEl("text", {x: left - 6, y: y(v) + 4, "text-anchor": "end"}, v));
  }
  parts.push(svgEl("text", {x: left, y: 186}, span % 60 === 0 ? span / 60 + " min ago" : span + " s ago"));
  parts.push(svgEl("text", {x: right, y: 186, "text-anchor": "end"}, "now"));
  const shown = history.filter((h) => end - h[0] <= span);
  parts.push(line(shown.map((h) => [x(h[0]).toFixed(1), y(h[2]).toFixed(1)]), "var(--miss)"));
  parts.push(line(shown.map((h) => [x(h[0]).toFixed(1), y(h[1]).toFixed(1)]), "var(--hit)"));
  chart.replaceChildren(...parts);
}

function render(data) {
  $("target").textContent = data.servers.join(", ") + (data.sasl ? " · SASL user " + data.username : " · no SASL");
  const errors = $("errors");
  errors.hidden = data.errors.length === 0;
  errors.replaceChildren(...data.errors.map((e) => cell("p", e)));
  const live = $("live");
  live.textContent = data.errors.length ? "retrying every second" : "live · every second";
  live.classList.toggle("down", data.errors.length > 0);
  const ago = data.delta.seconds;
  $("delta-since").textContent = "Since " + data.delta.since + (ago >= 1 ? " (" + ago + " s ago)" : "") + ":";
  $("delta-text").textContent = data.delta.text;
  if (data.notice) $("notice").textContent = data.notice;
  renderTable(data);
  renderChart(data);
}

const act = poll("/api/stats", render, () => {
  const live = $("live");
  live.textContent = "the dashboard server is not answering — retrying";
  live.classList.add("down");
}, (error) => { $("notice").textContent = error; });

$("mark").addEventListener("click", () => act("/api/mark"));
$("reset").addEventListener("click", () => act("/api/reset"));
$("flush").addEventListener("click", () => {
  const where = $("target").textContent.split(" · ")[0];
  if (confirm("Flush all: delete every item in memcached at " + where + "?\nThe app's cache starts empty again.")) {
    act("/api/flush", '{"confirm":"flush"}');
  }
});
