// ops_lists.js — the operator's live lists on /ops: who waits, who holds a
// claim, which calls are open, which therapists are online.
//
// Asks GET /v1/pool/live (an extension, docs/protocol.md §3.2) every 2 s and
// draws four lists (data-testid ops-waiting-list, ops-claims-list,
// ops-calls-list, ops-therapists-list). Ages, the time left to accept and
// call durations tick every second on this page's clock, corrected by the
// server's `at`, so a page whose clock is off still counts right.
// Built with DOM calls only (never innerHTML): names and ids are data.
//
// API
//   startLists(conn, {intervalMs = 2000}) -> {refresh(), stop(), last}
//     conn: a protocol.js Connection (its http() carries the token).
//   ageText(seconds) -> "0:42", "12:05", "1:02:03"

import { formatClock } from "./protocol.js";

const POLL_MS = 2000;
const TICK_MS = 1000;

const $ = (id) => document.getElementById(id);

/** "m:ss" (or "h:mm:ss") for a duration in seconds; never negative. */
export function ageText(seconds) {
  return formatClock(Math.max(0, seconds));
}

function el(tag, { className, text, testid, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (testid) node.dataset.testid = testid;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  node.append(...children);
  return node;
}

/** A <time> that ticks (tickAll): "since" counts up from `iso`, "until" down to it. */
function ticking(iso, mode) {
  const t = el("time", { attrs: { datetime: iso } });
  t.dataset.tick = mode;
  t.dataset.at = String(Date.parse(iso));
  return t;
}

/** Set every ticking <time> under `root`; `skewMs`: the server's clock minus this page's. */
function tickAll(root, skewMs) {
  const now = Date.now() + skewMs;
  for (const t of root.querySelectorAll("time[data-tick]")) {
    const at = Number(t.dataset.at);
    if (!Number.isFinite(at)) continue;
    const s = t.dataset.tick === "until" ? (at - now) / 1000 : (now - at) / 1000;
    t.textContent = ageText(s);
  }
}

// ------------------------------------------------------------------- items

function waitingItem(r) {
  const topics = r.topics.length ? r.topics.join(", ") : "any topic";
  const li = el("li", { className: "qc-live-item", testid: "ops-waiting-item" }, [
    el("span", { className: "qc-live-main" }, [ticking(r.created_at, "since"), " waiting"]),
    el("span", { className: "qc-live-meta", text: `${topics} · ${r.region} · ${r.language}` }),
    el("span", { className: "qc-live-sub", text: `Client ${r.client_id} · ${r.id}` }),
  ]);
  li.dataset.requestId = r.id;
  return li;
}

function claimItem(c, names) {
  const li = el("li", { className: "qc-live-item", testid: "ops-claim-item" }, [
    el("span", { className: "qc-live-main", text: names.get(c.therapist_id) || c.therapist_id }),
    el("span", { className: "qc-live-meta" }, [ticking(c.expires_at, "until"), " left for the client to accept"]),
    el("span", { className: "qc-live-sub", text: `Request ${c.request_id}` }),
  ]);
  li.dataset.requestId = c.request_id;
  li.dataset.therapistId = c.therapist_id;
  return li;
}

function callItem(s, names) {
  const who = `${names.get(s.therapist_id) || s.therapist_id} with client ${s.client_id}`;
  const when =
    s.state === "live" && s.started_at
      ? [ticking(s.started_at, "since"), " on the call"]
      : ["Connecting, matched ", ticking(s.created_at, "since"), " ago"];
  const li = el("li", { className: "qc-live-item", testid: "ops-call-item" }, [
    el("span", { className: "qc-live-main", text: who }),
    el("span", { className: "qc-live-meta" }, when),
    el("span", { className: "qc-live-sub", text: `Session ${s.id}` }),
  ]);
  li.dataset.sessionId = s.id;
  li.dataset.state = s.state;
  return li;
}

/** "busy", "available" or "away" (online, neither available nor busy). */
export function therapistState(t) {
  if (t.busy) return "busy";
  return t.available ? "available" : "away";
}

const STATE_WORDS = { busy: "Busy", available: "Available", away: "Away" };

function therapistItem(t) {
  const state = therapistState(t);
  const li = el("li", { className: "qc-live-item qc-live-row", testid: "ops-therapist-item" }, [
    el("span", { className: "qc-live-main", text: t.name || t.id }),
    el("span", { className: `qc-state qc-state-${state}`, text: STATE_WORDS[state] }),
  ]);
  if (t.name) li.append(el("span", { className: "qc-live-sub", text: t.id }));
  li.dataset.therapistId = t.id;
  li.dataset.state = state;
  return li;
}

// -------------------------------------------------------------------- lists

const LISTS = [
  { key: "waiting", list: "ops-waiting-list", empty: "Nobody is waiting.", item: waitingItem },
  { key: "claims", list: "ops-claims-list", empty: "No claims.", item: claimItem },
  { key: "sessions", list: "ops-calls-list", empty: "No calls.", item: callItem },
  { key: "therapists", list: "ops-therapists-list", empty: "No therapist is online.", item: therapistItem },
];

function renderList(spec, live, names) {
  const ul = document.querySelector(`[data-testid="${spec.list}"]`);
  if (!ul) return;
  const entries = live[spec.key] || [];
  const total = live[`${spec.key}_total`] ?? entries.length;
  ul.replaceChildren(...entries.map((e) => spec.item(e, names)));
  const empty = $(`${spec.list}-empty`);
  if (empty) {
    empty.textContent = spec.empty;
    empty.hidden = entries.length > 0;
  }
  const count = $(`${spec.list}-count`);
  if (count) count.textContent = String(total);
  const more = $(`${spec.list}-more`);
  if (more) {
    more.hidden = total <= entries.length;
    more.textContent = `Showing the first ${entries.length} of ${total}.`;
  }
}

export function startLists(conn, { intervalMs = POLL_MS } = {}) {
  const root = $("lists") || document.body;
  const status = $("lists-status");
  const state = { last: null, skewMs: 0, inFlight: false, timer: null, ticker: null };

  function render(live) {
    const names = new Map(live.therapists.map((t) => [t.id, t.name || t.id]));
    for (const spec of LISTS) renderList(spec, live, names);
    tickAll(root, state.skewMs);
  }

  async function refresh() {
    if (state.inFlight) return;
    state.inFlight = true;
    try {
      const live = await conn.http("GET", "/v1/pool/live");
      const at = Date.parse(live.at);
      if (Number.isFinite(at)) state.skewMs = at - Date.now();
      state.last = live;
      render(live);
      if (status) {
        status.hidden = true;
        status.textContent = "";
      }
    } catch (err) {
      if (status) {
        status.hidden = false;
        status.textContent = `The lists could not be refreshed (${err.message}). Trying again.`;
      }
    } finally {
      state.inFlight = false;
    }
  }

  refresh();
  state.timer = window.setInterval(refresh, intervalMs);
  state.ticker = window.setInterval(() => tickAll(root, state.skewMs), TICK_MS);
  return {
    refresh,
    stop() {
      window.clearInterval(state.timer);
      window.clearInterval(state.ticker);
    },
    get last() {
      return state.last;
    },
  };
}
