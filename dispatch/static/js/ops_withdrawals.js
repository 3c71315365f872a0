// ops_withdrawals.js — "Withdrawals to process" on /ops.
//
// Lists what an operator still has to do (GET /v1/withdrawals?state=
// awaiting_invoice and ?state=scheduled: an operator sees everyone's), oldest
// first, one row each (data-testid="withdrawal-row", data-withdrawal-id):
// the amount in the deployment's currency, the therapist, the state, when it
// was asked for and the payout date, and the one step its state allows:
//   awaiting_invoice: "Invoice received" (withdrawal-invoice) ->
//     POST /v1/withdrawals/{id}/invoice: scheduled, with its payout date;
//   scheduled: "Mark as paid" (withdrawal-paid) -> POST .../paid: paid.
// The row then says what happened (role="status"), or why not, in words; a
// row acted on stays until the page is reloaded, so the result can be read.
// Refreshed by its button and every 30 s. DOM calls only (never innerHTML).
//
// API
//   startWithdrawals(conn) -> {refresh()}
//   formatMoney(minor, currency) -> "£12.30" (the currency's own decimals)
//   formatDay("2026-11-27") -> "Fri 27 Nov 2026"

const REFRESH_MS = 30_000;
const TO_PROCESS = ["awaiting_invoice", "scheduled"];

const $ = (id) => document.getElementById(id);

export function formatMoney(minor, currency) {
  try {
    const fmt = new Intl.NumberFormat(undefined, { style: "currency", currency });
    const digits = fmt.resolvedOptions().maximumFractionDigits;
    return fmt.format(minor / 10 ** digits);
  } catch {
    return `${minor} (${currency || "?"} minor units)`;
  }
}

export function formatDay(isoDate) {
  const t = Date.parse(`${isoDate}T00:00:00Z`);
  if (!isoDate || Number.isNaN(t)) return "—";
  return new Intl.DateTimeFormat(undefined, {
    weekday: "short",
    day: "numeric",
    month: "short",
    year: "numeric",
    timeZone: "UTC",
  }).format(t);
}

function formatMoment(iso) {
  const t = Date.parse(iso);
  if (!iso || Number.isNaN(t)) return "—";
  return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" }).format(t);
}

const STATE_WORDS = {
  awaiting_invoice: "Awaiting the invoice",
  scheduled: "Scheduled",
  paid: "Paid",
};

/** What to tell the operator when a step failed (ProtocolError from protocol.js). */
export function failureText(err, step) {
  const doing = step === "invoice" ? "record the invoice" : "mark it as paid";
  switch (err && err.code) {
    case "conflict": {
      const state = STATE_WORDS[err.detail && err.detail.state] || "in another state";
      return `Could not ${doing}: this withdrawal is ${state.toLowerCase()} already. The list shows it as it is now.`;
    }
    case "not_found":
      return `Could not ${doing}: there is no such withdrawal any more.`;
    case "network":
      return `Could not ${doing}: the server could not be reached. Nothing changed; try again.`;
    case "unavailable":
      return `Could not ${doing}: the service's database is not answering. Nothing changed; try again in a moment.`;
    case "forbidden":
    case "unauthorized":
      return `Could not ${doing}: you are not signed in as an operator any more.`;
    default:
      return `Could not ${doing}: ${(err && err.message) || "unknown error"}.`;
  }
}

function el(tag, { className, text, testid } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (testid) node.dataset.testid = testid;
  node.append(...children);
  return node;
}

function field(label, value) {
  return el("div", { className: "qc-wd-field" }, [
    el("dt", { text: label }),
    el("dd", {}, [value]),
  ]);
}

export function startWithdrawals(conn) {
  const list = document.querySelector('[data-testid="ops-withdrawals-list"]');
  const empty = $("withdrawals-empty");
  const status = $("withdrawals-status");
  /** id -> {w, message, error}: rows acted on in this page, kept with their result
   *  (the server's list, when it still has the row, gives its state). */
  const acted = new Map();
  let rows = [];
  let currency = "GBP";
  let inFlight = false;

  function row(w) {
    const note = acted.get(w.id);
    const li = el("li", { className: "qc-wd-row", testid: "withdrawal-row" });
    li.dataset.withdrawalId = w.id;
    li.dataset.state = w.state;
    const payout = w.payout_date
      ? el("time", { text: formatDay(w.payout_date) })
      : document.createTextNode("not yet (after the invoice)");
    if (w.payout_date) payout.setAttribute("datetime", w.payout_date);
    const amount = el("span", { className: "qc-wd-amount", text: formatMoney(w.amount_minor, currency) });
    li.append(
      el("dl", { className: "qc-wd-fields" }, [
        field("Amount", amount),
        field("Therapist", document.createTextNode(w.therapist_id)),
        field("State", el("span", { testid: "withdrawal-state", text: STATE_WORDS[w.state] || w.state })),
        field("Asked for", document.createTextNode(formatMoment(w.created_at))),
        field("Payout date", payout),
      ]),
    );
    const actions = el("div", { className: "qc-wd-actions" });
    if (w.state === "awaiting_invoice") {
      actions.append(button(w, "invoice", "Invoice received", "withdrawal-invoice"));
    } else if (w.state === "scheduled") {
      actions.append(button(w, "paid", "Mark as paid", "withdrawal-paid"));
    }
    const said = el("p", {
      className: note && note.error ? "qc-wd-result qc-wd-error" : "qc-wd-result",
      testid: "withdrawal-result",
      text: note ? note.message : "",
    });
    said.setAttribute("role", "status");
    said.tabIndex = -1;
    said.hidden = !note;
    actions.append(said);
    li.append(actions);
    return li;
  }

  function button(w, step, label, testid) {
    const b = el("button", { className: "qc-button qc-button-primary", text: label, testid });
    b.type = "button";
    b.setAttribute("aria-label", `${label}: ${formatMoney(w.amount_minor, currency)} for ${w.therapist_id}`);
    b.addEventListener("click", () => act(w, step, b));
    return b;
  }

  async function act(w, step, b) {
    b.disabled = true;
    b.textContent = "Saving…";
    let message;
    let error = false;
    let now = w;
    try {
      const res = await conn.http("POST", `/v1/withdrawals/${encodeURIComponent(w.id)}/${step}`);
      now = res.withdrawal;
      message =
        step === "invoice"
          ? `Invoice recorded. The payout is scheduled for ${formatDay(now.payout_date)}.`
          : `Marked as paid (${formatMoney(now.amount_minor, currency)} to ${now.therapist_id}).`;
    } catch (err) {
      error = true;
      message = failureText(err, step);
      const state = err && err.code === "conflict" && err.detail ? err.detail.state : null;
      if (state) now = { ...w, state }; // until the refresh brings the rest
    }
    acted.set(w.id, { w: now, message, error });
    await refresh();
    const li = list.querySelector(`[data-withdrawal-id="${CSS.escape(w.id)}"]`);
    const next = li && (li.querySelector("button") || li.querySelector('[data-testid="withdrawal-result"]'));
    next?.focus();
  }

  function render() {
    const shown = new Map(rows.map((w) => [w.id, w]));
    for (const [id, note] of acted) {
      if (!shown.has(id)) shown.set(id, note.w);
    }
    const ordered = [...shown.values()].sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
    list.replaceChildren(...ordered.map(row));
    empty.hidden = ordered.length > 0;
  }

  async function refresh() {
    if (inFlight) return;
    inFlight = true;
    try {
      const answers = await Promise.all(
        TO_PROCESS.map((state) => conn.http("GET", `/v1/withdrawals?state=${state}`)),
      );
      currency = answers[0].currency || currency;
      rows = answers.flatMap((a) => a.withdrawals);
      status.hidden = true;
      render();
    } catch (err) {
      status.hidden = false;
      status.textContent = `The withdrawals could not be loaded (${err.message}). Use "Refresh" to try again.`;
    } finally {
      inFlight = false;
    }
  }

  $("withdrawals-refresh")?.addEventListener("click", () => refresh());
  refresh();
  window.setInterval(() => {
    // Not while the operator is working in the list: a rebuild would move focus.
    if (!list.contains(document.activeElement)) refresh();
  }, REFRESH_MS);
  return { refresh };
}
