// The operator dashboard (/ops).
//
// Speaks only the public protocol: an operator's websocket gets `pool.stats`
// at once after `welcome` and then every second. Each number is shown live
// (data-testid="stat-<field>") and four series are kept in memory (at most
// 900 points, 15 minutes at one a second) and drawn on <canvas>:
// chart-waiting, chart-available and chart-wait (p50 and p95). On open the
// series start from GET /v1/pool/history (one sample per 5 s, kept by the
// service), so the charts survive a reload; pushes extend them from there.
// Beside the numbers: the live lists (ops_lists.js) and the withdrawals to
// process (ops_withdrawals.js) and the bookings left unmarked (ops_bookings.js);
// above everything, the safeguarding alerts until acknowledged (ops_safeguarding.js).

import { Connection } from "./protocol.js";
import { signIn, signOut, forgetToken, keepToken, showSignedOut } from "./auth.js";
import { startLists } from "./ops_lists.js";
import { startWithdrawals } from "./ops_withdrawals.js";
import { startBookings } from "./ops_bookings.js";
import { startSafeguarding } from "./ops_safeguarding.js";
import { startFeedback } from "./ops_feedback.js";
import { startPrivacy } from "./ops_privacy.js";

const FIELDS = [
  "waiting",
  "claimed",
  "therapists_online",
  "therapists_available",
  "therapists_busy",
  "oldest_wait_s",
  "wait_p50_s",
  "wait_p95_s",
  "created_15m",
  "matched_15m",
  "expired_15m",
  "cancelled_15m",
  "texts_sent_15m",
  "texts_failed_15m",
];
const WINDOW_MS = 15 * 60 * 1000;
const MAX_POINTS = 900;
/** A gap longer than this between two pushes (a disconnect) breaks the line. */
const GAP_MS = 3500;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- formatting

/** "42 s", "3 min 05 s", "1 h 02 min"; "—" for null. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

function formatValue(el, value) {
  if (el.dataset.kind === "duration") return formatDuration(value);
  if (value === null || value === undefined) return "—";
  return String(value);
}

// ------------------------------------------------------------------ history

/** The last 15 minutes of pushes, oldest first, never more than 900 points. */
export class History {
  constructor(maxPoints = MAX_POINTS, windowMs = WINDOW_MS) {
    this.maxPoints = maxPoints;
    this.windowMs = windowMs;
    this.points = [];
  }

  /** A point at `t` (ms); `gapMs`: a longer silence before it breaks the line. */
  add(t, stats, gapMs = GAP_MS) {
    this.points.push(point(t, stats, gapMs));
    this.prune(t);
  }

  /**
   * Put the service's samples (GET /v1/pool/history: `at` in RFC 3339) before
   * the points pushed since the page opened. `skewMs`: the server's clock
   * minus this page's; `intervalMs`: the samples' spacing. Returns how many
   * samples were taken.
   */
  load(samples, skewMs = 0, intervalMs = 5000) {
    const first = this.points.length ? this.points[0].t : Infinity;
    const older = [];
    for (const s of samples) {
      const t = Date.parse(s.at) - skewMs;
      if (Number.isFinite(t) && t < first) older.push(point(t, s, intervalMs * 1.8));
    }
    older.sort((a, b) => a.t - b.t);
    this.points.unshift(...older);
    this.prune(Date.now());
    return older.length;
  }

  prune(now) {
    const cutoff = now - this.windowMs;
    let drop = 0;
    while (drop < this.points.length && this.points[drop].t < cutoff) drop += 1;
    drop = Math.max(drop, this.points.length - this.maxPoints);
    if (drop > 0) this.points.splice(0, drop);
  }

  series(key) {
    return this.points.map((p) => [p.t, p[key], p.gap]);
  }
}

function point(t, stats, gapMs) {
  return {
    t,
    gap: gapMs,
    waiting: num(stats.waiting),
    available: num(stats.therapists_available),
    p50: num(stats.wait_p50_s),
    p95: num(stats.wait_p95_s),
  };
}

function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

// ------------------------------------------------------------------- charts

/** The smallest "nice" step (1, 2 or 5 x 10^k) at or above v. */
export function niceStep(v) {
  if (!(v > 0)) return 1;
  const base = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) {
    if (m * base >= v - 1e-9) return m * base;
  }
  return 10 * base;
}

/** A y scale for values up to `max`: {top, step, ticks}, at most 5 ticks of a nice step. */
export function yScale(max, integer = false) {
  let step = niceStep((max > 0 ? max : 1) / 4);
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = Math.max(1, Math.ceil((max > 0 ? max : 1) / step - 1e-9));
  return { top: ticks * step, step, ticks };
}

const COLOURS = {
  axis: "#5a5f66",
  grid: "#e3e6ea",
  text: "#30343a",
  waiting: "#1a4fa0",
  available: "#1e7a3c",
  p50: "#1a4fa0",
  p95: "#b3261e",
};

/**
 * Draw line series on a canvas.
 * series: [{points: [[t, v|null, gapMs?]...], colour, dash?}]; integer: whole-number ticks.
 * A silence longer than a point's gapMs (default 3.5 s) before it breaks the line.
 */
export function drawChart(canvas, series, now, { integer = false, unit = "" } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || canvas.width;
  const cssHeight = canvas.clientHeight || canvas.height;
  const w = Math.max(1, Math.round(cssWidth * dpr));
  const h = Math.max(1, Math.round(cssHeight * dpr));
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);

  const pad = { left: 40, right: 10, top: 10, bottom: 22 };
  const plotW = Math.max(10, cssWidth - pad.left - pad.right);
  const plotH = Math.max(10, cssHeight - pad.top - pad.bottom);

  // Time window: grows from 1 minute to 15 as the history does.
  let first = now;
  for (const s of series) if (s.points.length) first = Math.min(first, s.points[0][0]);
  const span = Math.min(WINDOW_MS, Math.max(60_000, now - first));
  const t0 = now - span;

  let max = 0;
  for (const s of series) for (const [, v] of s.points) if (v !== null && v > max) max = v;
  const { top, step, ticks } = yScale(max, integer);
  const decimals = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step) - 1e-9));

  const x = (t) => pad.left + ((t - t0) / span) * plotW;
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  // Horizontal grid and y labels.
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= ticks; i += 1) {
    const v = step * i;
    const yy = Math.round(y(v)) + 0.5;
    ctx.strokeStyle = i === 0 ? COLOURS.axis : COLOURS.grid;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(pad.left + plotW, yy);
    ctx.stroke();
    ctx.fillStyle = COLOURS.text;
    const label = v.toFixed(decimals);
    ctx.fillText(label + unit, pad.left - 4, yy);
  }
  // X labels: minutes ago.
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const minutes = span / 60_000;
  const minuteStep = minutes <= 2 ? 0.5 : minutes <= 6 ? 1 : minutes <= 10 ? 2 : 5;
  for (let m = 0; m <= minutes + 1e-9; m += minuteStep) {
    const xx = x(now - m * 60_000);
    if (xx < pad.left - 1) break;
    ctx.fillStyle = COLOURS.text;
    const label = m === 0 ? "now" : `−${m % 1 ? m.toFixed(1) : m}m`;
    ctx.fillText(label, Math.min(Math.max(xx, pad.left + 12), pad.left + plotW - 12), pad.top + plotH + 5);
  }

  // Lines.
  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.left, pad.top - 2, plotW + 1, plotH + 4);
  ctx.clip();
  for (const s of series) {
    ctx.strokeStyle = s.colour;
    ctx.fillStyle = s.colour;
    ctx.lineWidth = 2;
    ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    let drawing = false;
    let prevT = null;
    let prevGap = GAP_MS;
    let lone = null;
    for (const [t, v, gap = GAP_MS] of s.points) {
      // The longer allowance of the two points: history samples are 5 s apart.
      if (v === null || (prevT !== null && t - prevT > Math.max(gap, prevGap))) {
        if (lone) dot(ctx, lone);
        drawing = false;
        lone = null;
      }
      if (v !== null) {
        if (drawing) {
          ctx.lineTo(x(t), y(v));
          lone = null;
        } else {
          ctx.moveTo(x(t), y(v));
          drawing = true;
          lone = [x(t), y(v)];
        }
      }
      prevT = t;
      prevGap = gap;
    }
    ctx.stroke();
    if (lone) dot(ctx, lone);
  }
  ctx.restore();
}

function dot(ctx, [px, py]) {
  ctx.save();
  ctx.setLineDash([]);
  ctx.beginPath();
  ctx.arc(px, py, 2.5, 0, Math.PI * 2);
  ctx.fill();
  ctx.restore();
}

function summary(points, label, fmt = String) {
  const values = points.map(([, v]) => v).filter((v) => v !== null);
  if (!values.length) return `${label}: no data yet.`;
  const now = values[values.length - 1];
  return `${label}: now ${fmt(now)}, lowest ${fmt(Math.min(...values))}, highest ${fmt(Math.max(...values))}.`;
}

// --------------------------------------------------------------------- page

const history = new History();
let lastStats = null;

function announce(text) {
  const live = $("live");
  live.textContent = "";
  window.setTimeout(() => {
    live.textContent = text;
  }, 50);
}

function showError(text) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
}

function renderNumbers(stats) {
  for (const el of document.querySelectorAll("[data-field]")) {
    const field = el.dataset.field;
    if (!(field in stats)) continue;
    el.textContent = formatValue(el, stats[field]);
  }
  const updated = $("updated");
  const at = new Date();
  updated.dateTime = at.toISOString();
  updated.textContent = at.toLocaleTimeString();
}

function renderCharts() {
  const now = Date.now();
  history.prune(now);
  const waiting = history.series("waiting");
  const available = history.series("available");
  const p50 = history.series("p50");
  const p95 = history.series("p95");
  drawChart($("chart-waiting"), [{ points: waiting, colour: COLOURS.waiting }], now, { integer: true });
  drawChart($("chart-available"), [{ points: available, colour: COLOURS.available }], now, {
    integer: true,
  });
  drawChart(
    $("chart-wait"),
    [
      { points: p50, colour: COLOURS.p50 },
      { points: p95, colour: COLOURS.p95, dash: [6, 3] },
    ],
    now,
    { unit: "s" },
  );
  $("sum-waiting").textContent = summary(waiting, "Waiting requests");
  $("sum-available").textContent = summary(available, "Available therapists");
  $("sum-wait").textContent =
    `${summary(p50, "Median wait", formatDuration)} ${summary(p95, "95th percentile", formatDuration)}`;
}

function onStats(frame) {
  lastStats = frame;
  history.add(Date.now(), frame);
  renderNumbers(frame);
  renderCharts();
}

const CONN_WORDS = {
  idle: "Connecting…",
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  signed_out: "Signed out",
  closed: "Offline",
};

/** Mirror the connection's state in the bar (data-testid="status-line"). */
function setConnState(connState) {
  const el = $("conn");
  el.dataset.state = connState;
  el.textContent = CONN_WORDS[connState] || connState;
}

function start() {
  const signed = signIn({ role: "operator" });
  if (!signed) return;
  const { token, claims } = signed;
  $("who").textContent = claims.name || claims.sub || "";

  const conn = new Connection({ token });
  keepToken(conn);
  $("sign-out").addEventListener("click", () => {
    conn.close();
    signOut();
  });
  conn.on("open", ({ reconnected }) => {
    showError("");
    announce(reconnected ? "Reconnected." : "Connected. The numbers update every second.");
  });
  conn.on("pool.stats", onStats);
  conn.on("state", ({ state }) => setConnState(state));
  setConnState(conn.state);
  window.qcConn = conn;
  conn.on("close", ({ willReconnect }) => {
    if (!willReconnect) return;
    showError("Lost the connection to the service. Reconnecting…");
    announce("Connection lost. Reconnecting.");
  });
  conn.on("signedout", () => {
    forgetToken();
    showSignedOut("Your sign-in is no longer valid. Please sign in again.");
  });

  // Keep the time axis moving, also while disconnected.
  window.setInterval(() => {
    if (history.points.length) renderCharts();
  }, 1000);
  if (typeof ResizeObserver === "function") {
    const ro = new ResizeObserver(() => renderCharts());
    for (const id of ["chart-waiting", "chart-available", "chart-wait"]) ro.observe($(id));
  }
  renderCharts();
  const lists = startLists(conn);
  const withdrawals = startWithdrawals(conn);
  const bookings = startBookings(conn); // unmarked bookings, booking for a client
  const safeguarding = startSafeguarding(conn); // alerts, until acknowledged (PROTOCOL.md §10)
  const feedback = startFeedback(conn); // a therapist's ratings and comments (PROTOCOL.md §10)
  const privacy = startPrivacy(conn); // the audit trail, erasing a client (PROTOCOL.md §10)
  const ops = { history, historyLoaded: null, lists, withdrawals, bookings, safeguarding, feedback, privacy };
  Object.defineProperty(ops, "lastStats", { get: () => lastStats });
  window.qcOps = ops;
  loadHistory(conn).then((n) => {
    ops.historyLoaded = n;
  });
}

/** Start the charts from the service's history; how many samples (0 when it failed). */
async function loadHistory(conn) {
  try {
    const body = await conn.http("GET", "/v1/pool/history");
    const skewMs = Date.parse(body.at) - Date.now();
    const n = history.load(body.samples || [], Number.isFinite(skewMs) ? skewMs : 0, (body.interval_s || 5) * 1000);
    renderCharts();
    return n;
  } catch (err) {
    announce(`The charts' history could not be loaded (${err.message}); they start from now.`);
    return 0;
  }
}

start();
