// ops_feedback.js — a therapist's feedback on /ops (PROTOCOL.md §10): an
// operator enters a therapist's id and sees the count, the average rating and
// the newest 50 ratings with their comments, each with the client and the
// session it came from (`GET /v1/therapists/{id}/feedback`; operators see the
// ids a therapist does not).
//
// API
//   startFeedback(conn) -> {show(therapistId)}
//
// Test hooks (data-testid): ops-feedback, ops-feedback-form,
// ops-feedback-therapist, ops-feedback-go, ops-feedback-error,
// ops-feedback-summary, ops-feedback-list, ops-feedback-item (data-rating).

import { el, failureText } from "./dom.js";
import { formatWhen } from "./money.js";

const $ = (id) => document.getElementById(id);

function ratingWords(n) {
  return n === 1 ? "1 star" : `${n} stars`;
}

export function startFeedback(conn) {
  const form = $("ops-feedback-form");
  const input = $("ops-feedback-therapist");
  const error = $("ops-feedback-error");
  const summary = $("ops-feedback-summary");
  const list = $("ops-feedback-list");
  if (!form) return { show: async () => {} };

  function render(therapistId, data) {
    const n = Number(data.count) || 0;
    const avg = data.average === null || data.average === undefined ? null : Number(data.average);
    summary.textContent =
      n === 0
        ? `Therapist ${therapistId} has no ratings yet.`
        : `Therapist ${therapistId}: ${n === 1 ? "1 rating" : `${n} ratings`}, ` +
          `an average of ${avg.toFixed(2).replace(/\.?0+$/, "")} out of 5.`;
    summary.hidden = false;
    const items = Array.isArray(data.items) ? data.items : [];
    list.replaceChildren(
      ...items.map((f) =>
        el(
          "li",
          { className: "qc-money-item", "data-testid": "ops-feedback-item", "data-rating": String(f.rating) },
          el("p", { className: "qc-money-row" }, el("strong", { text: ratingWords(f.rating) })),
          f.comment ? el("p", { className: "qc-feedback-comment", text: f.comment }) : null,
          el("p", {
            className: "qc-money-meta",
            text: `${formatWhen(f.created_at)} · client ${f.client_id} · session ${f.session_id}`,
          }),
        ),
      ),
    );
  }

  async function show(therapistId) {
    error.textContent = "";
    try {
      const data = await conn.http(
        "GET",
        `/v1/therapists/${encodeURIComponent(therapistId)}/feedback?limit=50`,
      );
      render(therapistId, data || {});
    } catch (err) {
      summary.hidden = true;
      list.replaceChildren();
      error.textContent = failureText(err, "That therapist's feedback could not be loaded");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (!id) {
      error.textContent = "Enter the therapist's id.";
      input.focus();
      return;
    }
    show(id);
  });
  return { show };
}
