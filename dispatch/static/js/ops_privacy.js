// ops_privacy.js — records and erasure on /ops (PROTOCOL.md §10).
//
// "Who read a client's records": an operator enters a client's id and sees
// its audit trail (`GET /v1/audit?subject=`), oldest first, each entry saying
// who (id and role) read what (notes, a transcript, forms, a concern, an
// export, an erasure) about which session or form, when; "Show more" loads
// the next page (`next`).
//
// "Erase a client": the client's id, typed twice (the second time is the
// confirmation: the button stays disabled until both match), then
// `POST /v1/users/{id}/erase`; the answer is shown as what was erased. An
// erasure cannot be undone; a second one answers the first.
//
// API
//   startPrivacy(conn) -> {lookup(subjectId), erase(clientId)}
//
// Test hooks (data-testid): ops-audit, ops-audit-form, ops-audit-subject,
// ops-audit-go, ops-audit-error, ops-audit-summary, ops-audit-list,
// ops-audit-item (data-record, data-actor), ops-audit-more; ops-erase,
// ops-erase-form, ops-erase-client, ops-erase-confirm, ops-erase-go,
// ops-erase-error, ops-erase-result, ops-erase-counts.

import { el, failureText } from "./dom.js";
import { formatWhen } from "./money.js";

const $ = (id) => document.getElementById(id);

const RECORD_WORDS = {
  notes: "read the notes of session",
  transcript: "read the chat of session",
  forms: "read the forms",
  consents: "read the consent records",
  export: "downloaded their own data",
  erase: "erased this client",
  safeguarding: "read the safeguarding concern",
};

const COUNT_WORDS = [
  ["chat_messages", "chat messages deleted"],
  ["notes", "therapist notes deleted"],
  ["form_answers", "form answers deleted"],
  ["data_key", "data key destroyed"],
  ["names", "sessions with the name removed"],
  ["feedback_comments", "feedback comments removed"],
  ["contact", "email address removed"],
  ["referral", "referral link removed"],
  ["request_cancelled", "waiting request cancelled"],
  ["consents_kept", "consent records kept (kind, version, time)"],
  ["safeguarding_kept", "safeguarding alerts kept"],
];

function entryText(e) {
  const what = RECORD_WORDS[e.record] || `read ${e.record}`;
  const about = e.about_id ? ` ${e.about_id}` : "";
  return `${e.actor_role} ${e.actor_id} ${what}${about}`;
}

export function startPrivacy(conn) {
  const auditForm = $("ops-audit-form");
  const eraseForm = $("ops-erase-form");
  if (!auditForm || !eraseForm) return { lookup: async () => {}, erase: async () => {} };
  const subjectInput = $("ops-audit-subject");
  const auditError = $("ops-audit-error");
  const auditSummary = $("ops-audit-summary");
  const auditList = $("ops-audit-list");
  const more = $("ops-audit-more");
  const clientInput = $("ops-erase-client");
  const confirmInput = $("ops-erase-confirm");
  const eraseButton = $("ops-erase-go");
  const eraseError = $("ops-erase-error");
  const result = $("ops-erase-result");
  const counts = $("ops-erase-counts");
  let shown = { subject: null, next: null, count: 0 };

  function item(e) {
    return el(
      "li",
      { className: "qc-money-item", "data-testid": "ops-audit-item", "data-record": e.record, "data-actor": e.actor_id },
      el("p", { className: "qc-money-row", text: entryText(e) }),
      el("p", { className: "qc-money-meta", text: formatWhen(e.at) }),
    );
  }

  async function lookup(subject, { append = false } = {}) {
    auditError.textContent = "";
    const after = append && shown.next !== null ? `&after=${encodeURIComponent(shown.next)}` : "";
    try {
      const data = await conn.http("GET", `/v1/audit?subject=${encodeURIComponent(subject)}&limit=100${after}`);
      const entries = Array.isArray(data?.entries) ? data.entries : [];
      if (!append) auditList.replaceChildren();
      auditList.append(...entries.map(item));
      shown = { subject, next: data?.next ?? null, count: (append ? shown.count : 0) + entries.length };
      auditSummary.textContent =
        shown.count === 0
          ? `Nobody has read the records of ${subject}.`
          : `${shown.count === 1 ? "1 entry" : `${shown.count} entries`} for ${subject}, oldest first.`;
      auditSummary.hidden = false;
      more.hidden = shown.next === null;
    } catch (err) {
      auditSummary.hidden = true;
      more.hidden = true;
      if (!append) auditList.replaceChildren();
      auditError.textContent = failureText(err, "The audit trail could not be loaded");
    }
  }

  auditForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = subjectInput.value.trim();
    if (!id) {
      auditError.textContent = "Enter the client's id.";
      subjectInput.focus();
      return;
    }
    lookup(id);
  });
  more.addEventListener("click", () => {
    if (shown.subject) lookup(shown.subject, { append: true });
  });

  function confirmed() {
    const id = clientInput.value.trim();
    return id !== "" && confirmInput.value.trim() === id;
  }
  function syncButton() {
    eraseButton.disabled = !confirmed();
  }
  clientInput.addEventListener("input", syncButton);
  confirmInput.addEventListener("input", syncButton);
  syncButton();

  async function erase(clientId) {
    eraseError.textContent = "";
    result.hidden = true;
    eraseButton.disabled = true;
    try {
      const data = await conn.http("POST", `/v1/users/${encodeURIComponent(clientId)}/erase`, {});
      const erased = data?.erased || {};
      counts.replaceChildren(
        ...COUNT_WORDS.map(([key, words]) => {
          const value = erased[key];
          const n = typeof value === "boolean" ? (value ? "yes" : "no") : String(value ?? 0);
          return el("li", { "data-key": key }, `${words}: ${n}`);
        }),
      );
      $("ops-erase-summary").textContent =
        `Client ${clientId} was erased by ${data?.erased_by} at ${formatWhen(data?.erased_at)}. ` +
        "Its ledger entries stay, under its id alone.";
      result.hidden = false;
      confirmInput.value = "";
      $("ops-erase-summary").focus();
    } catch (err) {
      eraseError.textContent = failureText(err, "The client could not be erased");
    } finally {
      syncButton();
    }
  }

  eraseForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!confirmed()) {
      eraseError.textContent = "Type the client's id again, exactly, to confirm.";
      confirmInput.focus();
      return;
    }
    erase(clientInput.value.trim());
  });
  return { lookup, erase };
}
