// The console page's script (checkoutctl console): polls /api/summary and /api/charts and draws them with uPlot.
// Each chart's element carries data-series-count and data-series-points (non-null points drawn) and the invoice
// rows data-invoice / data-status, so a headless browser's DOM dump shows what was drawn.
"use strict";
const REFRESH = Math.max(1000, Number(document.body.dataset.refreshMs) || 5000);
const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72", "#e3b341", "#8b949e", "#56d364"];
const plots = {};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return v.toFixed(digits === undefined ? (a >= 100 ? 0 : a >= 10 ? 1 : 2) : digits);
}

function seconds(v) {
  if (v === null || v === undefined) return "–";
  return v < 1 ? Math.round(v * 1000) + " ms" : v.toFixed(1) + " s";
}

function shortTopic(t) { return t.replace(/^crypto-checkout\./, ""); }

// Every card first, so the grid has its final columns before a plot measures its width.
function ensureCard(chart) {
  let card = document.getElementById("chart-" + chart.id);
  if (!card) {
    card = el("div", { class: "chart", id: "chart-" + chart.id, "data-series-points": "0", "data-series-count": "0" },
      el("h3", {}, chart.title + " ", el("small", {}, chart.unit)), el("div", { class: "plot" }));
    document.getElementById("charts").append(card);
  }
  return card;
}

function plotWidth(card) {
  return Math.max(280, Math.floor(card.getBoundingClientRect().width) - 24);
}

// Plots follow their cards' width (window resized, columns changed).
window.addEventListener("resize", () => {
  for (const [id, p] of Object.entries(plots)) {
    const card = document.getElementById("chart-" + id);
    if (card) p.plot.setSize({ width: plotWidth(card), height: 210 });
  }
});

function drawChart(chart) {
  const card = ensureCard(chart);
  const box = card.querySelector(".plot");
  const points = chart.series.reduce((n, s) => n + s.values.filter(v => v !== null).length, 0);
  card.dataset.seriesCount = String(chart.series.length);
  card.dataset.seriesPoints = String(points);
  const labels = chart.series.map(s => chart.id === "throughput" ? shortTopic(s.label) : s.label);
  const key = labels.join("|");
  if (chart.error || points === 0) {
    if (plots[chart.id]) { plots[chart.id].plot.destroy(); delete plots[chart.id]; }
    box.replaceChildren(el("div", { class: chart.error ? "error" : "empty" },
      chart.error ? chart.error : "no data yet (Prometheus scrapes every few seconds)"));
    return;
  }
  const data = [chart.x, ...chart.series.map(s => s.values)];
  const existing = plots[chart.id];
  if (existing && existing.key === key) { existing.plot.setData(data); return; }
  if (existing) existing.plot.destroy();
  box.replaceChildren();
  const opts = {
    width: plotWidth(card),
    height: 210,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true } },
    axes: [
      { stroke: "#8b98a5", grid: { stroke: "#26313c" }, ticks: { stroke: "#26313c" } },
      { stroke: "#8b98a5", grid: { stroke: "#26313c" }, ticks: { stroke: "#26313c" }, size: 55,
        values: (u, vals) => vals.map(v => fmt(v)) },
    ],
    series: [{}, ...labels.map((label, i) => ({
      label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
      value: (u, v) => fmt(v),
    }))],
  };
  plots[chart.id] = { key, plot: new uPlot(opts, data, box) };
}

function tile(label, value, detail) {
  return el("div", { class: "tile" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value),
    el("div", { class: "detail" }, detail || ""));
}

function drawSummary(s) {
  const v = document.getElementById("verify");
  if (!s.verify) { v.dataset.verify = "off"; v.textContent = "verify off"; }
  else if (s.verify.ok) { v.dataset.verify = "ok"; v.textContent = "verify ✓ (" + s.verify.in_flight + " in flight)"; }
  else if (s.verify.first_violation) { v.dataset.verify = "violation"; v.textContent = "verify ✗ " + s.verify.first_violation; }
  else { v.dataset.verify = "error"; v.textContent = "verify could not check: " + (s.verify.error || "?"); }
  document.getElementById("updated").textContent = "snapshot " + new Date(s.taken_at).toLocaleTimeString();
  const events = s.topics.reduce((n, t) => n + t.events_per_second, 0);
  const lag = s.groups.reduce((n, g) => n + (g.lag_messages || 0), 0);
  const worst = s.groups.reduce((m, g) => Math.max(m, g.lag_seconds || 0), 0);
  const settled = s.settlements.map(c => c.currency + " " + c.settlements + " · fees " + c.fees).join("; ");
  const invoices = Object.entries(s.invoices_by_status).map(([k, n]) => k + " " + n).join(" · ");
  const webhooks = s.webhooks.success_ratio === null ? "–" : (s.webhooks.success_ratio * 100).toFixed(1) + " %";
  document.getElementById("tiles").replaceChildren(
    tile("Events/s", fmt(events), s.topics.map(t => shortTopic(t.topic) + " " + fmt(t.events_per_second)).join(" · ")),
    tile("Lag", fmt(lag, 0) + " msg", "worst " + seconds(worst)),
    tile("End-to-end p95", seconds(s.end_to_end_p95_seconds), "all groups, last minute"),
    tile("Dead-lettered", fmt(s.dead_lettered_total, 0), s.dead_lettered.filter(d => d.records > 0).map(d => d.group + " " + d.records).join(" · ")),
    tile("Settlements", String(s.settlements.reduce((n, c) => n + c.settlements, 0)), settled),
    tile("Webhooks 2xx", webhooks, fmt(s.webhooks.attempts_5m, 0) + " attempts in 5 min"),
    tile("Invoices", String(Object.values(s.invoices_by_status).reduce((a, b) => a + b, 0)), invoices),
  );
  const body = document.querySelector("#invoices tbody");
  body.replaceChildren(...s.recent_invoices.map(i => el("tr", { "data-invoice": i.invoice_id, "data-status": i.status },
    el("td", { class: "id" }, i.invoice_id.slice(0, 16) + "…"),
    el("td", { class: "id" }, i.merchant_id.slice(0, 16) + "…"),
    el("td", {}, el("span", { class: "status " + i.status }, i.status)),
    el("td", { class: "num" }, i.total_amount + " " + i.currency),
    el("td", { class: "num" }, i.amount_paid + " " + i.crypto_currency),
    el("td", {}, [i.late_payment ? "late" : "", i.overpaid ? "over" : ""].filter(Boolean).join(", ")),
    el("td", {}, new Date(i.last_event_at).toLocaleString()),
  )));
  document.getElementById("problems").textContent = s.problems.join(" · ");
}

async function poll() {
  try {
    const [summary, charts] = await Promise.all([fetch("/api/summary"), fetch("/api/charts")]);
    if (summary.ok) drawSummary(await summary.json());
    if (charts.ok) {
      const list = (await charts.json()).charts;
      list.forEach(ensureCard);
      list.forEach(drawChart);
    }
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  } catch (e) {
    document.getElementById("problems").textContent = "console server unreachable: " + e;
  }
  setTimeout(poll, REFRESH);
}
poll();
