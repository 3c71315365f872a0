// ops_safeguarding.js — safeguarding alerts on /ops (PROTOCOL.md §10): one
// banner (role="alert") per open alert, with a short beep when one arrives,
// that stays until an operator presses "Acknowledge"; then it says who
// acknowledged it and when (also when another operator did, on any server:
// `safeguarding.acked`). The open alerts are loaded on page load and after a
// reconnect (`GET /v1/safeguarding?open=true`), so a reload keeps them.
// "Read the concern" shows the therapist's words (`GET /v1/safeguarding/{id}`),
// as text, never HTML.
//
// API
//   startSafeguarding(conn) -> {reload(), alerts: Map(id -> alert)}
//
// Test hooks (data-testid): sg-alerts, sg-alert (data-alert-id, data-state
// "open" | "acked"), sg-ack, sg-read, sg-concern-text, sg-acked, sg-dismiss,
// sg-alerts-error.

import { el, failureText } from "./dom.js";

const $ = (id) => document.getElementById(id);

/** "14:05" (and the date when it is not today), in this browser's zone. */
function when(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || "";
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

let audio = null;

/** A short two-tone beep; pages may not make sound before a user gesture:
 *  then nothing happens (the banner is there either way). */
export function beep() {
  try {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return false;
    audio = audio || new Ctx();
    if (audio.state === "suspended") audio.resume().catch(() => {});
    const t = audio.currentTime;
    for (const [i, freq] of [880, 660].entries()) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "sine";
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, t + i * 0.25);
      gain.gain.exponentialRampToValueAtTime(0.2, t + i * 0.25 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.25 + 0.22);
      osc.connect(gain).connect(audio.destination);
      osc.start(t + i * 0.25);
      osc.stop(t + i * 0.25 + 0.24);
    }
    return true;
  } catch {
    return false;
  }
}

export function startSafeguarding(conn) {
  const box = $("sg-alerts");
  const list = $("sg-alert-list");
  const error = $("sg-alerts-error");
  const alerts = new Map(); // id -> {alert, node}

  function showError(text) {
    error.textContent = text;
    error.hidden = !text;
  }

  function summary(a) {
    return (
      `Safeguarding concern raised by therapist ${a.therapist_id} about session ${a.session_id}` +
      ` (client ${a.client_id}) at ${when(a.raised_at)}.`
    );
  }

  function render(entry) {
    const a = entry.alert;
    const acked = Boolean(a.acked_at);
    const node = entry.node;
    node.dataset.state = acked ? "acked" : "open";
    node.className = `qc-alert ${acked ? "qc-alert-info" : "qc-alert-error"} qc-sg-alert`;
    // An open alert is announced as an alert; once acknowledged, it is just status.
    node.setAttribute("role", acked ? "status" : "alert");
    entry.ackButton.hidden = acked;
    entry.acked.hidden = !acked;
    entry.dismiss.hidden = !acked;
    if (acked) entry.acked.textContent = `Acknowledged by ${a.acked_by} at ${when(a.acked_at)}.`;
    box.hidden = alerts.size === 0;
  }

  function add(a, { fresh = false } = {}) {
    const known = alerts.get(a.id);
    if (known) {
      if (a.acked_at && !known.alert.acked_at) {
        known.alert = { ...known.alert, ...a };
        render(known);
      }
      return;
    }
    const title = el("p", { className: "qc-sg-summary", text: summary(a) });
    const ackButton = el(
      "button",
      { type: "button", className: "qc-button qc-button-primary", "data-testid": "sg-ack" },
      "Acknowledge",
    );
    const read = el(
      "button",
      { type: "button", className: "qc-button qc-button-quiet", "data-testid": "sg-read", "aria-expanded": "false" },
      "Read the concern",
    );
    const dismiss = el(
      "button",
      { type: "button", className: "qc-button qc-button-quiet", "data-testid": "sg-dismiss", hidden: true },
      "Dismiss",
    );
    const concern = el("p", { className: "qc-sg-concern", "data-testid": "sg-concern-text", hidden: true });
    const acked = el("p", { className: "qc-sg-acked", "data-testid": "sg-acked", hidden: true });
    const status = el("p", { className: "qc-field-error", hidden: true });
    const node = el(
      "li",
      { "data-testid": "sg-alert", "data-alert-id": a.id },
      title,
      acked,
      concern,
      status,
      el("div", { className: "qc-actions" }, ackButton, read, dismiss),
    );
    const entry = { alert: a, node, ackButton, acked, dismiss };
    alerts.set(a.id, entry);

    ackButton.addEventListener("click", async () => {
      ackButton.disabled = true;
      status.hidden = true;
      try {
        const body = await conn.http("POST", `/v1/safeguarding/${encodeURIComponent(a.id)}/ack`, {});
        entry.alert = { ...entry.alert, ...body.alert };
        render(entry);
        dismiss.focus();
      } catch (err) {
        status.textContent = failureText(err, "The alert could not be acknowledged");
        status.hidden = false;
      } finally {
        ackButton.disabled = false;
      }
    });
    read.addEventListener("click", async () => {
      if (!concern.hidden) {
        concern.hidden = true;
        read.setAttribute("aria-expanded", "false");
        return;
      }
      status.hidden = true;
      try {
        const body = await conn.http("GET", `/v1/safeguarding/${encodeURIComponent(a.id)}`);
        concern.textContent = body.alert.concern;
        concern.hidden = false;
        read.setAttribute("aria-expanded", "true");
      } catch (err) {
        status.textContent = failureText(err, "The concern could not be read");
        status.hidden = false;
      }
    });
    dismiss.addEventListener("click", () => {
      alerts.delete(a.id);
      node.remove();
      box.hidden = alerts.size === 0;
      $("main").focus();
    });

    list.prepend(node);
    render(entry);
    if (fresh && !a.acked_at) beep();
  }

  async function reload() {
    try {
      const body = await conn.http("GET", "/v1/safeguarding?open=true");
      showError("");
      box.hidden = alerts.size === 0;
      const open = body.alerts || [];
      // Oldest first, so the newest ends up on top.
      for (const a of [...open].reverse()) add(a, { fresh: true });
      // Acknowledged meanwhile (while this page was away): say so.
      const stillOpen = new Set(open.map((a) => a.id));
      const gone = [...alerts.values()].filter((e) => !e.alert.acked_at && !stillOpen.has(e.alert.id));
      if (gone.length) {
        const done = await conn.http("GET", "/v1/safeguarding?open=false");
        for (const a of done.alerts || []) add(a);
      }
    } catch (err) {
      showError(failureText(err, "The safeguarding alerts could not be loaded"));
      box.hidden = false;
    }
  }

  conn.on("safeguarding.alert", (frame) => {
    const { type: _, ...a } = frame;
    add({ acked_by: null, acked_at: null, ...a }, { fresh: true });
  });
  conn.on("safeguarding.acked", (frame) => {
    const entry = alerts.get(frame.id);
    if (!entry) return;
    entry.alert = { ...entry.alert, acked_by: frame.acked_by, acked_at: frame.acked_at };
    render(entry);
  });
  conn.on("open", ({ reconnected }) => {
    if (reconnected) reload(); // frames missed while away
  });
  reload();
  return { reload, alerts };
}
