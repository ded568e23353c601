// The status page: polls /status.json and draws what it says. Plain DOM and inline SVG, no
// library, so the page works offline like the drawing page. Everything from the server is set
// as text, never as HTML.

const SVG = "http://www.w3.org/2000/svg";
/** The charts' margins, in CSS pixels: the viewBox is set to the chart's size on screen, so
 * text and lines keep their size on a phone and on a wide screen alike. */
const MARGIN = { left: 52, right: 10, top: 10, bottom: 22 };

const body = document.body;
const STATUS_URL = body.dataset.statusUrl;
const POLL_MS = Number(body.dataset.pollMs) || 2000;

const $ = (id) => document.getElementById(id);
const ui = {
  freshness: $("freshness"),
  freshnessText: $("freshness-text"),
  rate: $("rate"),
  recentErrors: $("recent-errors"),
  p50: $("p50"),
  p95: $("p95"),
  queueDepth: $("queue-depth"),
  workerCount: $("worker-count"),
  answersTotal: $("answers-total"),
  connections: $("connections"),
  workers: document.querySelector("#workers tbody"),
  noWorkers: $("no-workers"),
  errors: document.querySelector("#errors tbody"),
  noErrors: $("no-errors"),
  rateChart: $("chart-rate"),
  latencyChart: $("chart-latency"),
  updated: $("updated"),
};

const integer = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });

const perSecond = (value) => (value == null ? "–" : decimal.format(value));
const ms = (value) => (value == null ? "–" : `${value < 10 ? decimal.format(value) : integer.format(value)} ms`);
const count = (value) => (value == null ? "–" : integer.format(value));

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function showWorkers(workers) {
  ui.workerCount.textContent = count(workers.length);
  ui.noWorkers.hidden = workers.length > 0;
  ui.workers.replaceChildren();
  for (const worker of workers) {
    const row = ui.workers.insertRow();
    row.dataset.node = worker.node ?? "";
    cell(row, worker.node ?? "?", "node");
    cell(row, worker.model ?? "?", "model");
    cell(row, worker.device ?? "?", "device");
    cell(row, count(worker.answers), "num answers");
    cell(row, perSecond(worker.answers_per_second), "num rate");
    const metrics = cell(row, "", "metrics");
    if (worker.metrics) {
      const link = document.createElement("a");
      link.href = worker.metrics;
      link.textContent = worker.metrics.replace(/^https?:\/\//, "").replace(/\/metrics$/, "");
      link.title = worker.metrics;
      metrics.append(link);
    } else {
      metrics.textContent = "none";
    }
  }
}

function showErrors(errors) {
  ui.noErrors.hidden = errors.length > 0;
  ui.errors.replaceChildren();
  for (const error of errors) {
    const row = ui.errors.insertRow();
    row.dataset.code = error.code;
    cell(row, error.code, "code");
    cell(row, count(error.recent), "num recent");
    cell(row, count(error.total), "num total");
  }
}

/** The smallest 1, 2 or 5 times a power of ten at or above `value` (and above 0). */
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((v) => v >= value);
}

function svgElement(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text != null) element.textContent = text;
  return element;
}

/**
 * Draw lines of `points.length` values each (null: no data there) on `svg`, with the y axis
 * from 0 to a round maximum labelled by `format`, and the x axis from `seconds` ago to now.
 */
function drawChart(svg, lines, { seconds, format, area = false }) {
  const width = Math.max(200, Math.round(svg.clientWidth || 600));
  const height = Math.max(100, Math.round(svg.clientHeight || 160));
  const { left, right, top, bottom } = MARGIN;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const values = lines.flatMap((line) => line.values).filter((v) => v != null);
  const max = niceCeiling(Math.max(0, ...values));
  const length = Math.max(1, ...lines.map((line) => line.values.length));
  const x = (i) => left + (length === 1 ? plotWidth : (i * plotWidth) / (length - 1));
  const y = (v) => top + plotHeight - (v / max) * plotHeight;

  const children = [];
  for (const fraction of [0, 0.5, 1]) {
    const at = y(max * fraction);
    children.push(svgElement("line", { class: "grid", x1: left, x2: width - right, y1: at, y2: at }));
    children.push(
      svgElement("text", { class: "axis", x: left - 6, y: at + 4, "text-anchor": "end" }, format(max * fraction)),
    );
  }
  const minutes = Math.round(seconds / 60);
  children.push(svgElement("text", { class: "axis", x: left, y: height - 4 }, `${minutes} min ago`));
  children.push(svgElement("text", { class: "axis", x: width - right, y: height - 4, "text-anchor": "end" }, "now"));

  for (const line of lines) {
    let path = "";
    const values = line.values;
    values.forEach((v, i) => {
      if (v == null) return;
      const joined = i > 0 && values[i - 1] != null;
      path += `${joined ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      // A point alone (nothing on either side) is drawn as a dot: a path of one point is not.
      if (!joined && values[i + 1] == null) {
        const dot = { class: `dot ${line.className}`, cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3 };
        children.push(svgElement("circle", dot));
      }
    });
    if (!path.includes("L")) continue; // dots only
    if (area) {
      const fill = `${path}L${x(length - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`;
      children.push(svgElement("path", { class: `area ${line.className}`, d: fill }));
    }
    children.push(svgElement("path", { class: `line ${line.className}`, d: path }));
  }
  svg.replaceChildren(...children);
}

function showCharts(series) {
  const points = series.points;
  const rates = points.map((p) => p.per_second);
  drawChart(ui.rateChart, [{ className: "rate", values: rates }], {
    seconds: series.seconds,
    format: (v) => decimal.format(v),
    area: true,
  });
  const latest = points.at(-1);
  ui.rateChart.setAttribute(
    "aria-label",
    `Answers a second over the last ${Math.round(series.seconds / 60)} minutes; ` +
      `latest ${perSecond(latest?.per_second)}, highest ${perSecond(Math.max(0, ...rates))}.`,
  );
  drawChart(
    ui.latencyChart,
    [
      { className: "p95", values: points.map((p) => p.p95_ms) },
      { className: "p50", values: points.map((p) => p.p50_ms) },
    ],
    { seconds: series.seconds, format: (v) => ms(v) },
  );
  ui.latencyChart.setAttribute(
    "aria-label",
    `Latency over the last ${Math.round(series.seconds / 60)} minutes; ` +
      `latest p50 ${ms(latest?.p50_ms)}, p95 ${ms(latest?.p95_ms)}.`,
  );
}

function show(status) {
  ui.rate.textContent = perSecond(status.recent.per_second);
  ui.recentErrors.textContent = count(status.recent.errors);
  ui.p50.textContent = ms(status.recent.p50_ms);
  ui.p95.textContent = ms(status.recent.p95_ms);
  ui.queueDepth.textContent = count(status.queue_depth);
  ui.answersTotal.textContent = count(status.answers_total);
  ui.answersTotal.dataset.value = status.answers_total;
  ui.connections.textContent = count(status.connections);
  showWorkers(status.workers);
  showErrors(status.errors);
  showCharts(status.series);
  const redisDown = status.redis !== "ok";
  ui.freshness.dataset.state = redisDown ? "reconnecting" : "connected";
  ui.freshnessText.textContent = redisDown ? "Redis is unreachable" : "Live";
  ui.updated.textContent = `updated ${new Date(status.time * 1000).toLocaleTimeString()}`;
}

async function poll() {
  try {
    const response = await fetch(STATUS_URL, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    show(await response.json());
  } catch (error) {
    ui.freshness.dataset.state = "offline";
    ui.freshnessText.textContent = "Cannot reach the service; retrying";
    console.warn("status poll failed:", error);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
