// feedback.js — session feedback (PROTOCOL.md §10; an ES module, no build step).
//
// API
//   initEndFeedback({root, api, announce}) -> {show(sessionId), hide()}
//     The client's prompt on the talk page's end screen. root: an empty,
//     hidden element in the end view; api(method, path, body) -> {status, body}
//     (talk.js's: a 2xx answer is status 200). show() asks whether feedback on
//     that session was given (`GET /v1/sessions/{id}/feedback`): given, it
//     thanks; not, it offers 1-5 stars (radio buttons, so arrow keys move
//     between them), an optional comment (at most 2000 characters, counted)
//     and "Send feedback" (`POST /v1/sessions/{id}/feedback`). Once sent: a
//     thank-you. A refusal is said in words (the server's own), never a code.
//   initFeedbackSummary({token, therapistId, announce, showView, currentView, baseView})
//     -> {open, back, refresh}
//     The console's "Feedback" section (console.html's #feedback-open and
//     <section id="view-feedback">), as earnings.js's: the average rating, how
//     many, and the newest comments (`GET /v1/therapists/{id}/feedback`);
//     never who wrote them (the server does not say).
//
// Everything from the server reaches the page as text, never as HTML.
//
// Test hooks (data-testid): feedback-prompt, feedback-form, feedback-star-1..5,
// feedback-comment, feedback-send, feedback-error, feedback-thanks;
// feedback-open, feedback-view, feedback-average, feedback-count,
// feedback-list, feedback-item (data-rating), feedback-empty, feedback-load-error.

import { BACK_WORDS, el, failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";
import { formatWhen } from "./money.js";

const COMMENT_MAX = 2000;
const STARS = [1, 2, 3, 4, 5];

const $ = (id) => document.getElementById(id);

function starWords(n) {
  return n === 1 ? "1 star" : `${n} stars`;
}

/** "★★★★☆" for a rating (rounded), hidden from screen readers beside its words. */
function starLine(rating) {
  const full = Math.max(0, Math.min(5, Math.round(rating)));
  return "★".repeat(full) + "☆".repeat(5 - full);
}

// -------------------------------------------------------- the client's prompt

export function initEndFeedback({ root, api, announce }) {
  let sessionId = null;
  let busy = false;

  const error = el("p", {
    id: "feedback-error",
    className: "qc-field-error",
    "data-testid": "feedback-error",
    role: "alert",
    hidden: true,
  });
  const radios = STARS.map((n) =>
    el("input", {
      type: "radio",
      name: "feedback-rating",
      value: String(n),
      "data-testid": `feedback-star-${n}`,
      "aria-describedby": "feedback-error",
    }),
  );
  const stars = el(
    "fieldset",
    { className: "qc-fieldset" },
    el("legend", { text: "Your rating" }),
    el(
      "div",
      { className: "qc-topics qc-feedback-stars" },
      ...STARS.map((n, i) =>
        el(
          "label",
          { className: "qc-chip" },
          radios[i],
          " ",
          el("span", { "aria-hidden": "true", text: "★".repeat(n) }),
          " ",
          el("span", { text: starWords(n) }),
        ),
      ),
    ),
  );
  const comment = el("textarea", {
    id: "feedback-comment",
    name: "comment",
    rows: 3,
    maxlength: COMMENT_MAX,
    "data-testid": "feedback-comment",
    "aria-describedby": "feedback-comment-count feedback-error",
  });
  const count = el("p", { id: "feedback-comment-count", className: "qc-counter" });
  const send = el("button", {
    type: "submit",
    className: "qc-button qc-button-primary",
    "data-testid": "feedback-send",
    text: "Send feedback",
  });
  const form = el(
    "form",
    { className: "qc-feedback", "data-testid": "feedback-form", novalidate: true, "aria-labelledby": "feedback-title" },
    el("h3", { id: "feedback-title", text: "How was your session?" }),
    el("p", {
      className: "qc-muted",
      text: "Your therapist sees your rating and comment, but not your name.",
    }),
    stars,
    el(
      "div",
      { className: "qc-field" },
      el("label", { for: "feedback-comment" }, "A comment ", el("span", { className: "qc-muted", text: "(optional)" })),
      comment,
      count,
    ),
    error,
    el("div", { className: "qc-actions" }, send),
  );
  const thanks = el("p", {
    className: "qc-alert qc-alert-info",
    "data-testid": "feedback-thanks",
    role: "status",
    tabindex: "-1",
    hidden: true,
  });
  root.replaceChildren(form, thanks);

  function setError(text) {
    error.textContent = text || "";
    error.hidden = !text;
  }

  function renderCount() {
    count.textContent = `${comment.value.length} / ${COMMENT_MAX} characters`;
  }

  function showThanks(text) {
    form.hidden = true;
    thanks.textContent = text;
    thanks.hidden = false;
  }

  function reset() {
    for (const r of radios) r.checked = false;
    comment.value = "";
    renderCount();
    setError("");
    form.hidden = false;
    thanks.hidden = true;
    send.disabled = false;
  }

  async function show(id) {
    sessionId = id;
    reset();
    root.hidden = false;
    const res = await api("GET", `/v1/sessions/${encodeURIComponent(id)}/feedback`);
    if (sessionId !== id) return;
    if (res.status === 200 && res.body && res.body.feedback) {
      showThanks("Thank you: your feedback on this session has been sent.");
    }
  }

  function hide() {
    sessionId = null;
    root.hidden = true;
  }

  async function submit(event) {
    event.preventDefault();
    if (busy || !sessionId) return;
    setError("");
    const chosen = radios.find((r) => r.checked);
    if (!chosen) {
      setError("Choose a rating from 1 to 5 stars.");
      radios[0].focus();
      return;
    }
    const body = { rating: Number(chosen.value) };
    if (comment.value.trim()) body.comment = comment.value;
    busy = true;
    send.disabled = true;
    send.setAttribute("aria-busy", "true");
    const id = sessionId;
    try {
      const res = await api("POST", `/v1/sessions/${encodeURIComponent(id)}/feedback`, body);
      if (sessionId !== id) return;
      if (res.status === 200) {
        showThanks("Thank you for your feedback.");
        announce("Thank you for your feedback.");
        thanks.focus();
        return;
      }
      const err = res.body && res.body.error;
      if (err && err.code === "conflict" && /already/.test(err.message || "")) {
        showThanks("Your feedback on this session was already sent. Thank you.");
        return;
      }
      if (res.status === 0) setError("Your feedback was not sent: the server could not be reached. Try again.");
      else setError(`Your feedback was not sent: ${(err && err.message) || "please try again."}`);
      (err && err.field === "comment" ? comment : chosen).focus();
    } finally {
      busy = false;
      send.disabled = false;
      send.removeAttribute("aria-busy");
    }
  }

  form.addEventListener("submit", submit);
  comment.addEventListener("input", renderCount);
  for (const r of radios) r.addEventListener("change", () => setError(""));
  renderCount();
  return { show, hide };
}

// ------------------------------------------------ the therapist's summary

export function initFeedbackSummary({ token, therapistId, announce, showView, currentView, baseView = () => "list" }) {
  const ui = {
    open: $("feedback-open"),
    view: $("view-feedback"),
    title: $("feedback-title"),
    back: $("feedback-back"),
    loading: $("feedback-loading"),
    error: $("feedback-load-error"),
    average: $("feedback-average"),
    count: $("feedback-count"),
    list: $("feedback-list"),
    empty: $("feedback-empty"),
  };
  if (!ui.open || !ui.view) return { open() {}, back() {}, refresh() {} };

  let words = "";

  function render(data) {
    const n = Number(data.count) || 0;
    if (data.average === null || data.average === undefined || n === 0) {
      ui.average.textContent = "No ratings yet";
      words = "no ratings yet";
    } else {
      const avg = Number(data.average);
      const text = `${avg.toFixed(2).replace(/\.?0+$/, "")} out of 5`;
      ui.average.replaceChildren(
        el("span", { "aria-hidden": "true", className: "qc-feedback-starline", text: `${starLine(avg)} ` }),
        text,
      );
      words = `an average of ${text}`;
    }
    ui.count.textContent = n === 1 ? "1 rating" : `${n} ratings`;
    words += `, ${ui.count.textContent}`;
    const items = Array.isArray(data.items) ? data.items : [];
    ui.empty.hidden = items.length > 0;
    ui.list.replaceChildren(
      ...items.map((f) =>
        el(
          "li",
          { className: "qc-money-item", "data-testid": "feedback-item", "data-rating": String(f.rating) },
          el(
            "p",
            { className: "qc-money-row" },
            el(
              "span",
              {},
              el("span", { "aria-hidden": "true", text: `${starLine(f.rating)} ` }),
              el("strong", { text: starWords(f.rating) }),
            ),
          ),
          f.comment ? el("p", { className: "qc-feedback-comment", text: f.comment }) : null,
          el("p", { className: "qc-money-meta", text: formatWhen(f.created_at) }),
        ),
      ),
    );
  }

  async function load() {
    ui.loading.hidden = false;
    ui.error.hidden = true;
    try {
      const data = await httpRequest(
        token(),
        "GET",
        `/v1/therapists/${encodeURIComponent(therapistId)}/feedback?limit=50`,
      );
      render(data);
    } catch (err) {
      ui.error.textContent = failureText(err, "Your feedback could not be loaded");
      ui.error.hidden = false;
    } finally {
      ui.loading.hidden = true;
    }
  }

  async function open() {
    if (!ui.view.isConnected) {
      ui.open.hidden = true;
      return;
    }
    if (currentView() !== "feedback") {
      ui.back.textContent = BACK_WORDS[baseView()] || "Back";
      showView("feedback");
    } else {
      ui.title.focus();
    }
    await load();
    if (words) announce(`Your feedback: ${words}.`);
  }

  function back() {
    showView(baseView(), { focus: false });
    ui.open.focus();
  }

  ui.open.addEventListener("click", open);
  ui.back.addEventListener("click", back);
  ui.open.hidden = false;
  return { open, back, refresh: load };
}
