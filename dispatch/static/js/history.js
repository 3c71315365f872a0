// history.js — the client's past sessions and transactions on /talk (an ES module).
//
// "Your past sessions" (`GET /v1/sessions`): date, therapist, duration, what
// it cost, why it ended, each with a button that opens its chat
// (`GET /v1/sessions/{id}/transcript`). "Transactions" (`GET /v1/transactions`):
// top-ups, session charges and refunds with the balance after each; a card
// (or test) top-up opens its receipt. Everything from the server reaches the
// page as text (textContent), never as HTML.
//
// API
//   initHistory({api, me, currency})   api as in wallet.js; me: the client's
//                            user id; currency() -> the wallet's currency code (or a
//                            promise of it).
//   showHistory(visible)     shows the panel (and reloads its lists) or hides it.
//   refreshHistory()         reloads both lists.
//
// Test hooks (data-testid): history, past-sessions, past-session (data-session-id),
// show-transcript, transcript, transcript-message, transactions, transaction
// (data-kind), show-receipt, receipt.

import { describeEndReason, formatDuration } from "./protocol.js";
import { formatMoney } from "./money.js";

const $ = (id) => document.getElementById(id);

let api = null;
let me = "";
let currency = "GBP";
let loading = null;
let again = false;
let currencyOf = () => "";

const KIND_WORDS = {
  topup: "Top-up",
  session_charge: "Session",
  refund: "Refund",
};
const METHOD_WORDS = { card: "by card", test: "(test payment)", operator: "by the service" };

function el(tag, { className = "", text = "", testid = "" } = {}, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  if (testid) node.dataset.testid = testid;
  node.append(...children);
  return node;
}

function when(iso) {
  const t = iso ? new Date(iso) : null;
  if (!t || Number.isNaN(t.getTime())) return "";
  return t.toLocaleString(undefined, {
    day: "numeric",
    month: "short",
    year: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
}

function signed(minor) {
  if (typeof minor !== "number") return "";
  const abs = formatMoney(Math.abs(minor), currency);
  return minor < 0 ? `−${abs}` : `+${abs}`;
}

// ------------------------------------------------------------- sessions

function costWords(s) {
  if (typeof s.amount_minor === "number") {
    return s.amount_minor === 0 ? "no charge" : formatMoney(s.amount_minor, currency);
  }
  return s.state === "ended" ? "charge being worked out" : "in progress";
}

function sessionItem(s) {
  const li = el("li", { className: "qc-history-item", testid: "past-session" });
  li.dataset.sessionId = s.id;
  const head = el(
    "p",
    { className: "qc-history-head" },
    el("strong", { text: when(s.started_at || s.matched_at) || "Date not known" }),
    ` · ${s.name || "Your therapist"}`,
  );
  const facts = el("p", {
    className: "qc-history-facts",
    text: `${formatDuration(s.duration_s || 0)} · ${costWords(s)}`,
  });
  li.append(head, facts);
  if (s.state === "ended" && s.end_reason) {
    li.append(el("p", { className: "qc-muted", text: describeEndReason(s.end_reason, "client") }));
  }
  const list = el("ol", { className: "qc-transcript", testid: "transcript" });
  list.id = `transcript-${s.id}`;
  list.hidden = true;
  const button = el("button", { className: "qc-button", text: "Read the chat", testid: "show-transcript" });
  button.type = "button";
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", list.id);
  button.addEventListener("click", () => toggleTranscript(s, button, list));
  li.append(el("div", { className: "qc-actions" }, button), list);
  return li;
}

async function toggleTranscript(s, button, list) {
  const open = button.getAttribute("aria-expanded") !== "true";
  button.setAttribute("aria-expanded", String(open));
  button.textContent = open ? "Hide the chat" : "Read the chat";
  list.hidden = !open;
  if (!open || list.dataset.loaded === "true") return;
  list.replaceChildren(el("li", { className: "qc-muted", text: "Loading the chat…" }));
  const res = await api("GET", `/v1/sessions/${encodeURIComponent(s.id)}/transcript`);
  const messages = res.status === 200 && Array.isArray(res.body?.messages) ? res.body.messages : null;
  if (!messages) {
    list.replaceChildren(el("li", { className: "qc-muted", text: "The chat could not be loaded. Try again later." }));
    button.setAttribute("aria-expanded", "false");
    button.textContent = "Read the chat";
    return;
  }
  list.dataset.loaded = "true";
  if (!messages.length) {
    list.replaceChildren(el("li", { className: "qc-muted", text: "No chat messages in this session." }));
    return;
  }
  list.replaceChildren(
    ...messages.map((m) => {
      const mine = m.from === me;
      const item = el(
        "li",
        { className: `qc-msg ${mine ? "qc-msg-mine" : "qc-msg-theirs"}`, testid: "transcript-message" },
        el("span", { className: "qc-msg-who", text: mine ? "You" : s.name || "Your therapist" }),
        el("span", { className: "qc-msg-text", text: String(m.text ?? "") }),
      );
      const time = el("time", { className: "qc-msg-time", text: when(m.sent_at) });
      if (m.sent_at) time.dateTime = m.sent_at;
      item.append(time);
      return item;
    }),
  );
}

async function loadSessions() {
  const list = $("past-sessions");
  const res = await api("GET", "/v1/sessions?limit=20");
  const sessions = res.status === 200 && Array.isArray(res.body?.sessions) ? res.body.sessions : null;
  $("past-sessions-error").hidden = sessions !== null;
  if (!sessions) return;
  // A transcript the client has open stays open across a reload of the list.
  const open = new Set(
    [...list.querySelectorAll('[aria-expanded="true"]')].map((b) => b.closest("li")?.dataset.sessionId),
  );
  list.replaceChildren(...sessions.map(sessionItem));
  $("past-sessions-empty").hidden = sessions.length > 0;
  for (const button of list.querySelectorAll("[data-testid=show-transcript]")) {
    if (open.has(button.closest("li").dataset.sessionId)) button.click();
  }
}

// --------------------------------------------------------- transactions

function receipt(t) {
  const box = el("dl", { className: "qc-receipt", testid: "receipt" });
  box.id = `receipt-${t.id}`;
  box.hidden = true;
  const rows = [
    ["Receipt for", "A top-up of your wallet"],
    ["Date", when(t.created_at)],
    ["Amount paid", formatMoney(Math.abs(t.amount_minor), currency)],
    ["Paid", t.method === "test" ? "With a test payment (no real card)" : "By card"],
    ["Balance after", formatMoney(t.balance_after_minor, currency)],
    ["Reference", t.id],
  ];
  for (const [term, value] of rows) {
    box.append(el("div", {}, el("dt", { text: term }), el("dd", { text: value || "—" })));
  }
  if (typeof t.receipt_url === "string" && /^https:\/\//.test(t.receipt_url)) {
    const link = el("a", { text: "The card receipt from the payment provider" });
    link.href = t.receipt_url;
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    box.append(el("div", {}, el("dt", { text: "Card receipt" }), el("dd", {}, link)));
  }
  return box;
}

function transactionItem(t) {
  const li = el("li", { className: "qc-history-item", testid: "transaction" });
  li.dataset.kind = t.kind;
  const kind = KIND_WORDS[t.kind] || "Other";
  const how = t.kind === "topup" && METHOD_WORDS[t.method] ? ` ${METHOD_WORDS[t.method]}` : "";
  li.append(
    el(
      "p",
      { className: "qc-history-head" },
      el("strong", { text: `${kind}${how}` }),
      ` · ${when(t.created_at)}`,
    ),
    el("p", {
      className: "qc-history-facts",
      text: `${signed(t.amount_minor)} · balance after ${formatMoney(t.balance_after_minor, currency)}`,
    }),
  );
  if (t.kind === "topup" && (t.method === "card" || t.method === "test")) {
    const box = receipt(t);
    const button = el("button", { className: "qc-button", text: "Show the receipt", testid: "show-receipt" });
    button.type = "button";
    button.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-controls", box.id);
    button.addEventListener("click", () => {
      const open = box.hidden;
      box.hidden = !open;
      button.setAttribute("aria-expanded", String(open));
      button.textContent = open ? "Hide the receipt" : "Show the receipt";
    });
    li.append(el("div", { className: "qc-actions" }, button), box);
  }
  return li;
}

async function loadTransactions() {
  const res = await api("GET", "/v1/transactions?limit=50");
  const entries = res.status === 200 && Array.isArray(res.body?.transactions) ? res.body.transactions : null;
  $("transactions-error").hidden = entries !== null;
  if (!entries) return;
  $("transactions").replaceChildren(...entries.map(transactionItem));
  $("transactions-empty").hidden = entries.length > 0;
}

// -------------------------------------------------------------- panel

export function refreshHistory() {
  if (loading) {
    // A load is under way: run once more after it (something changed since it began).
    again = true;
    return loading;
  }
  loading = (async () => {
    do {
      again = false;
      currency = (await currencyOf()) || currency;
      await Promise.all([loadSessions(), loadTransactions()]);
    } while (again);
  })().finally(() => {
    loading = null;
  });
  return loading;
}

export function showHistory(visible) {
  const panel = $("history");
  const was = !panel.hidden;
  panel.hidden = !visible;
  if (visible && !was) refreshHistory();
}

export function initHistory(options) {
  api = options.api;
  me = options.me || "";
  if (options.currency) currencyOf = options.currency;
}
