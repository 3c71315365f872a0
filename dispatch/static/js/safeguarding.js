// safeguarding.js — "Raise a safeguarding concern" on the therapist console:
// a button in the call and on the "The call has ended" panel opening one small
// form (PROTOCOL.md §10: `POST /v1/sessions/{id}/safeguarding`; an ES module,
// no build step). Operators are alerted at once; the concern itself is only
// ever sent to the server, never shown back or kept in the page.
//
// API
//   initSafeguarding({token, announce, sessionId}) -> {close()}
//     sessionId() -> the session the form is about: the call's, else the one
//     that just ended (null: the buttons do nothing). close() hides the form.
//
// Test hooks (data-testid): sg-open-call, sg-open-ended, sg-form, sg-concern,
// sg-submit, sg-cancel, sg-error, sg-result.

import { failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";

const $ = (id) => document.getElementById(id);
const CONCERN_MAX = 4000;

export function initSafeguarding({ token, announce, sessionId }) {
  const ui = {
    openCall: $("sg-open-call"),
    openEnded: $("sg-open-ended"),
    form: $("sg-form"),
    title: $("sg-title"),
    concern: $("sg-concern"),
    count: $("sg-count"),
    submit: $("sg-submit"),
    cancel: $("sg-cancel"),
    error: $("sg-error"),
    result: $("sg-result"),
  };
  const state = { sessionId: null, opener: null, busy: false };

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
    if (text) ui.concern.setAttribute("aria-invalid", "true");
    else ui.concern.removeAttribute("aria-invalid");
  }

  function renderCount() {
    ui.count.textContent = `${ui.concern.value.length} / ${CONCERN_MAX} characters.`;
  }

  function open(opener) {
    const sid = sessionId();
    if (!sid) {
      announce("There is no session to raise a concern about.");
      return;
    }
    state.sessionId = sid;
    state.opener = opener;
    for (const button of [ui.openCall, ui.openEnded]) button.setAttribute("aria-expanded", "true");
    ui.form.hidden = false;
    ui.result.hidden = true;
    ui.result.textContent = "";
    showError("");
    renderCount();
    ui.concern.focus();
  }

  function close({ restoreFocus = true } = {}) {
    ui.form.hidden = true;
    ui.concern.value = "";
    showError("");
    for (const button of [ui.openCall, ui.openEnded]) button.setAttribute("aria-expanded", "false");
    if (restoreFocus && state.opener && !state.opener.closest("[hidden]")) state.opener.focus();
  }

  async function submit(event) {
    event.preventDefault();
    if (state.busy) return;
    const concern = ui.concern.value;
    if (!concern.trim()) {
      showError("Describe the concern before sending it.");
      ui.concern.focus();
      return;
    }
    if (concern.length > CONCERN_MAX) {
      showError(`The concern is too long: at most ${CONCERN_MAX} characters.`);
      ui.concern.focus();
      return;
    }
    state.busy = true;
    ui.submit.disabled = true;
    ui.submit.textContent = "Sending…";
    try {
      await httpRequest(token(), "POST", `/v1/sessions/${encodeURIComponent(state.sessionId)}/safeguarding`, {
        concern,
      });
      close({ restoreFocus: false });
      ui.result.textContent =
        "Your safeguarding concern was sent. The care team has been alerted and will follow it up.";
      ui.result.hidden = false;
      ui.result.focus();
      announce("Safeguarding concern sent; the care team has been alerted.");
    } catch (err) {
      showError(failureText(err, "The concern was not sent"));
      ui.concern.focus();
    } finally {
      state.busy = false;
      ui.submit.disabled = false;
      ui.submit.textContent = "Send to the care team";
    }
  }

  ui.openCall.addEventListener("click", () => open(ui.openCall));
  ui.openEnded.addEventListener("click", () => open(ui.openEnded));
  ui.cancel.addEventListener("click", () => close());
  ui.form.addEventListener("submit", submit);
  ui.concern.addEventListener("input", () => {
    renderCount();
    if (!ui.error.hidden) showError("");
  });
  ui.form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      close();
    }
  });
  return { close };
}
