// schedule.js — the console's "Bookings" section: the therapist's upcoming
// and recent bookings (bookinglist.js: join, cancel, "it took place" / "the
// client did not come" once started) and the notes that fall due
// (PROTOCOL.md §8 `GET /v1/bookings`, `GET /v1/notes/due`).
//
// API
//   initSchedule({token, announce, showView, currentView, baseView, onSession, openNotes, openForms})
//     -> {open, back, refresh}   as the other console sections (earnings.js).
//     onSession(session): a booked call opened by "Join the call"
//     (`POST /v1/bookings/{id}/session`) goes to the console's call view.
//     openNotes(sessionId): "Write notes" opens that call in the call log.
//     openForms(clientId, name, button): a booking's "Client forms" (clientforms.js).
//
// Test hooks (data-testid): bookings-open, bookings-view, booking-list,
// bookings-empty, notes-due-list, note-due (data-session-id), note-due-write,
// notes-due-empty; bookinglist.js's.

import { BACK_WORDS, el, failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";
import { firstName } from "./money.js";
import { initMyBookings } from "./mybookings.js";
import { whenWords } from "./when.js";

const $ = (id) => document.getElementById(id);

export function initSchedule({ token, announce, showView, currentView, baseView = () => "list", onSession, openNotes, openForms = null }) {
  const ui = {
    open: $("bookings-open"),
    view: $("view-bookings"),
    title: $("bookings-title"),
    back: $("bookings-back"),
    error: $("bookings-error"),
    due: $("notes-due-list"),
    dueEmpty: $("notes-due-empty"),
  };
  const api = (method, path, body) => httpRequest(token(), method, path, body);
  let currency = "GBP";

  const mine = initMyBookings({
    list: $("bookings-list"),
    empty: $("bookings-empty"),
    api,
    role: "therapist",
    currency: async () => {
      try {
        const e = await api("GET", "/v1/earnings");
        if (e && typeof e.currency === "string") currency = e.currency;
      } catch {
        // the default currency
      }
      return currency;
    },
    announce,
    onJoin: async (b) => {
      const data = await api("POST", `/v1/bookings/${encodeURIComponent(b.id)}/session`);
      onSession(data.session);
    },
    onForms: openForms ? (b, name, button) => openForms(b.client_id, name, button) : null,
  });

  function dueItem(n) {
    const id = n.session_id || n.id;
    const write = el("button", { type: "button", className: "qc-button", "data-testid": "note-due-write", text: "Write notes" });
    write.addEventListener("click", () => openNotes(id));
    const late = n.overdue === true || Date.parse(n.due_at) < Date.now();
    return el(
      "li",
      { className: "qc-bk-note", "data-testid": "note-due", "data-session-id": id },
      el("p", { className: "qc-bk-row" }, el("strong", { text: `${n.booking_id ? "Booked call" : "Call"} with ${firstName(n.name)}` }), el("span", { text: late ? "Overdue" : "Due" })),
      el("p", {
        className: "qc-bk-meta",
        text: `Ended ${whenWords(Date.parse(n.ended_at))}. Notes due by ${whenWords(Date.parse(n.due_at))}.`,
      }),
      el("div", { className: "qc-actions" }, write),
    );
  }

  /** The client's name of each call (the call log's), by session id. */
  async function names() {
    try {
      const data = await api("GET", "/v1/sessions?limit=200");
      return new Map(((data && data.sessions) || []).map((x) => [x.id, x.name]));
    } catch {
      return new Map();
    }
  }

  async function loadDue() {
    try {
      const [data, named] = await Promise.all([api("GET", "/v1/notes/due"), names()]);
      const list = ((data && data.notes_due) || []).map((n) => ({ ...n, name: named.get(n.session_id) }));
      ui.due.replaceChildren(...list.map(dueItem));
      ui.dueEmpty.hidden = list.length > 0;
    } catch (err) {
      ui.dueEmpty.hidden = false;
      ui.dueEmpty.textContent = failureText(err, "The notes due could not be loaded");
    }
  }

  async function refresh() {
    ui.error.hidden = true;
    await Promise.all([
      mine.reload().catch((err) => {
        ui.error.textContent = failureText(err, "Your bookings could not be loaded");
        ui.error.hidden = false;
      }),
      loadDue(),
    ]);
  }

  async function open() {
    if (!ui.view.isConnected) {
      ui.open.hidden = true;
      return;
    }
    if (currentView() !== "bookings") {
      ui.back.textContent = BACK_WORDS[baseView()] || "Back";
      showView("bookings");
    } else {
      ui.title.focus();
    }
    await refresh();
  }

  function back() {
    showView(baseView(), { focus: false });
    ui.open.focus();
  }

  ui.open.addEventListener("click", open);
  ui.back.addEventListener("click", back);
  ui.open.hidden = false;
  return { open, back, refresh };
}
