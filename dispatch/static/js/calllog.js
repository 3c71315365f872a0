// calllog.js — the therapist's call log, a section of the console, and what
// the "The call has ended" panel says the call earned (PROTOCOL.md §5, §6).
//
// API
//   initCallLog({token, therapistId, announce, showView, currentView, baseView})
//     -> {open(sessionId?), back(), afterCall(sessionId)}
//     Wires console.html's "Call log" button (#calllog-open, hidden until this
//     runs), its <section id="view-calllog"> and the ended panel's
//     #ended-earned / #ended-open-log. The arguments are as for initProfile
//     (profile.js), token() giving the current token on each call, plus
//     baseView() -> the console view "Back" returns to (list, confirm, call).
//     open() lists the past sessions (`GET /v1/sessions`), newest first, each
//     with the client's first name, date, duration and earnings; open(id)
//     goes straight to one. A session opens its chat transcript
//     (`GET .../transcript`), the therapist's notes (`GET .../notes`) and a
//     form that adds a note after the call (`POST .../notes`).
//     afterCall(id) polls `GET /v1/sessions` briefly (the charge is written
//     at the end of the session) and says in #ended-earned what it earned.
//
// Everything from the server or the therapist reaches the page as text
// (textContent, value), never as HTML.
//
// Test hooks (data-testid): calllog-open, calllog-view, calllog-list,
// calllog-item (data-session-id), calllog-empty, calllog-more, calllog-error,
// calllog-detail, calllog-back-to-list, calllog-transcript, calllog-message,
// calllog-notes, calllog-note, calllog-note-input, calllog-note-save,
// calllog-note-status, calllog-note-error, ended-earned, ended-open-log.

import { BACK_WORDS, el, failureText } from "./dom.js";
import { describeEndReason, formatDuration, httpRequest } from "./protocol.js";
import { firstName, formatMoney, formatWhen } from "./money.js";

const $ = (id) => document.getElementById(id);

const PAGE = 50; // sessions per "Show older calls"
const MAX_LIMIT = 200; // the most GET /v1/sessions answers (PROTOCOL.md §5)
const NOTE_MAX = 20000;
/** How long the ended panel waits for the session's charge, and how often it asks. */
const EARNED_DELAYS_MS = [400, 700, 1000, 1500, 2000, 3000];

function durationWords(s) {
  if (!s.started_at) return "Did not start";
  return formatDuration(s.duration_s);
}

function earnedWords(s, currency) {
  if (typeof s.amount_minor !== "number") return s.state === "ended" ? "Not settled yet" : "Still open";
  return formatMoney(s.amount_minor, currency);
}

/**
 * The notes to show: the in-call pad saves the whole text each time (each save
 * is a note), so a note the next one merely extends is a draft of it and is
 * folded into it; nothing written is hidden, since the later note holds it all.
 */
function foldDrafts(notes) {
  const out = [];
  for (const note of notes) {
    const last = out[out.length - 1];
    if (last && typeof note.text === "string" && note.text.startsWith(last.text)) out.pop();
    out.push(note);
  }
  return out;
}

export function initCallLog({ token, therapistId, announce, showView, currentView, baseView = () => "list" }) {
  const ui = {
    open: $("calllog-open"),
    view: $("view-calllog"),
    title: $("calllog-title"),
    back: $("calllog-back"),
    loading: $("calllog-loading"),
    error: $("calllog-error"),
    listPart: $("calllog-list-part"),
    list: $("calllog-list"),
    empty: $("calllog-empty"),
    more: $("calllog-more"),
    detail: $("calllog-detail"),
    detailBack: $("calllog-detail-back"),
    detailTitle: $("calllog-detail-title"),
    facts: $("calllog-facts"),
    transcript: $("calllog-transcript"),
    transcriptStatus: $("calllog-transcript-status"),
    notes: $("calllog-notes"),
    notesStatus: $("calllog-notes-status"),
    noteForm: $("calllog-note-form"),
    noteInput: $("calllog-note-input"),
    noteCount: $("calllog-note-count"),
    noteError: $("calllog-note-error"),
    noteSave: $("calllog-note-save"),
    noteStatus: $("calllog-note-status"),
    ended: $("ended"),
    endedEarned: $("ended-earned"),
    endedDuration: $("ended-duration"),
    endedOpenLog: $("ended-open-log"),
  };
  const state = {
    limit: PAGE,
    sessions: [], // the ended sessions as last listed
    currency: null,
    shown: null, // the session whose detail is open
    opener: null, // the list entry that opened it (focus goes back there)
    drafts: new Map(), // session id -> a note typed and not saved yet
    listing: null, // the load under way
    saving: false,
    endedFor: null, // the session the ended panel is about
  };

  const api = (method, path, body) => httpRequest(token(), method, path, body);

  /** The deployment's one currency (`GET /v1/earnings`); GBP until known. */
  async function currency() {
    if (state.currency) return state.currency;
    try {
      const data = await api("GET", "/v1/earnings");
      if (data && typeof data.currency === "string") state.currency = data.currency;
    } catch {
      // amounts show in the default currency until the next try
    }
    return state.currency || "GBP";
  }

  // -- the list ---------------------------------------------------------------------

  function showError(text) {
    ui.error.textContent = text || "";
    ui.error.hidden = !text;
  }

  function sep() {
    return el("span", { className: "qc-visually-hidden", text: ", " });
  }

  function renderList(cur) {
    ui.list.replaceChildren();
    for (const s of state.sessions) {
      const button = el(
        "button",
        {
          type: "button",
          className: "qc-log-open",
          "data-testid": "calllog-item",
          "data-session-id": s.id,
        },
        el("strong", { className: "qc-log-name", text: firstName(s.name) }),
        sep(),
        el("span", { className: "qc-log-when", text: formatWhen(s.started_at || s.matched_at) }),
        sep(),
        el("span", { className: "qc-log-duration", text: durationWords(s) }),
        sep(),
        el("span", { className: "qc-log-earned", text: earnedWords(s, cur) }),
      );
      button.addEventListener("click", () => openDetail(s.id, button));
      ui.list.append(el("li", { className: "qc-log-item" }, button));
    }
    ui.empty.hidden = state.sessions.length > 0;
  }

  async function loadList() {
    if (state.listing) return state.listing;
    ui.loading.hidden = false;
    showError("");
    state.listing = (async () => {
      try {
        const [data, cur] = await Promise.all([api("GET", `/v1/sessions?limit=${state.limit}`), currency()]);
        const all = (data && data.sessions) || [];
        state.sessions = all.filter((s) => s.state === "ended");
        renderList(cur);
        ui.more.hidden = all.length < state.limit || state.limit >= MAX_LIMIT;
      } catch (err) {
        showError(failureText(err, "Your call log could not be loaded"));
      } finally {
        ui.loading.hidden = true;
        state.listing = null;
      }
    })();
    return state.listing;
  }

  async function showMore() {
    state.limit = Math.min(MAX_LIMIT, state.limit + PAGE);
    const count = state.sessions.length;
    await loadList();
    // Keep keyboard users where the new entries start.
    const next = ui.list.querySelectorAll("[data-testid=calllog-item]")[count];
    if (next) next.focus();
    else ui.title.focus();
  }

  function showListPart() {
    state.shown = null;
    ui.detail.hidden = true;
    ui.listPart.hidden = false;
  }

  // -- one session ------------------------------------------------------------------

  function renderFacts(s, cur) {
    const rows = [
      ["When", formatWhen(s.started_at || s.matched_at) || "Not known"],
      ["Lasted", durationWords(s)],
      ["How it ended", s.end_reason ? describeEndReason(s.end_reason, "therapist") : "Not recorded"],
      ["Earned", earnedWords(s, cur)],
    ];
    ui.facts.replaceChildren();
    for (const [term, value] of rows) ui.facts.append(el("dt", { text: term }), el("dd", { text: value }));
  }

  function noteItem(note) {
    return el(
      "li",
      { className: "qc-log-note", "data-testid": "calllog-note" },
      el("p", { className: "qc-log-note-text", text: note.text }),
      el("p", { className: "qc-log-meta", text: `Saved ${formatWhen(note.saved_at) || "earlier"}` }),
    );
  }

  async function loadTranscript(s) {
    ui.transcript.replaceChildren();
    ui.transcriptStatus.textContent = "Loading the chat…";
    try {
      const data = await api("GET", `/v1/sessions/${encodeURIComponent(s.id)}/transcript`);
      if (state.shown !== s.id) return;
      const messages = (data && data.messages) || [];
      const client = firstName(s.name);
      for (const m of messages) {
        const mine = m.from === therapistId;
        ui.transcript.append(
          el(
            "li",
            { className: `qc-log-message ${mine ? "qc-log-mine" : ""}`, "data-testid": "calllog-message" },
            el(
              "p",
              { className: "qc-log-meta" },
              el("strong", { text: mine ? "You" : client }),
              ` ${formatWhen(m.sent_at)}`,
            ),
            el("p", { className: "qc-log-message-text", text: m.text }),
          ),
        );
      }
      ui.transcriptStatus.textContent = messages.length ? "" : "No messages were written in this call.";
    } catch (err) {
      if (state.shown === s.id) ui.transcriptStatus.textContent = failureText(err, "The chat could not be loaded");
    }
  }

  async function loadNotes(s) {
    ui.notes.replaceChildren();
    ui.notesStatus.textContent = "Loading your notes…";
    try {
      const data = await api("GET", `/v1/sessions/${encodeURIComponent(s.id)}/notes`);
      if (state.shown !== s.id) return;
      const notes = foldDrafts((data && data.notes) || []);
      for (const note of notes) ui.notes.append(noteItem(note));
      ui.notesStatus.textContent = notes.length ? "" : "You have no notes on this call yet.";
    } catch (err) {
      if (state.shown === s.id) ui.notesStatus.textContent = failureText(err, "Your notes could not be loaded");
    }
  }

  async function openDetail(sessionId, opener = null) {
    let s = state.sessions.find((x) => x.id === sessionId);
    if (!s) {
      await loadList();
      s = state.sessions.find((x) => x.id === sessionId);
    }
    if (!s) {
      showListPart();
      showError("This call is not in your call log (yet). Try again in a moment.");
      return;
    }
    state.shown = s.id;
    state.opener = opener;
    const client = firstName(s.name);
    ui.detailTitle.textContent = `Call with ${client}`;
    renderFacts(s, state.currency || "GBP");
    ui.noteInput.value = state.drafts.get(s.id) || "";
    clearNoteError();
    ui.noteStatus.textContent = "";
    renderNoteCount();
    ui.listPart.hidden = true;
    ui.detail.hidden = false;
    ui.detailTitle.focus();
    loadTranscript(s);
    loadNotes(s);
  }

  function closeDetail() {
    const opener = state.opener;
    showListPart();
    const again = opener && opener.isConnected ? opener : null;
    (again || ui.title).focus();
  }

  // -- adding a note ----------------------------------------------------------------

  function renderNoteCount() {
    const n = ui.noteInput.value.length;
    ui.noteCount.textContent = `${n} / ${NOTE_MAX} characters`;
  }

  function setNoteError(text) {
    ui.noteError.textContent = text;
    ui.noteError.hidden = false;
    ui.noteInput.setAttribute("aria-invalid", "true");
  }

  function clearNoteError() {
    ui.noteError.textContent = "";
    ui.noteError.hidden = true;
    ui.noteInput.removeAttribute("aria-invalid");
  }

  async function saveNote(event) {
    event.preventDefault();
    if (state.saving || !state.shown) return;
    const sessionId = state.shown;
    const text = ui.noteInput.value;
    clearNoteError();
    ui.noteStatus.textContent = "";
    // Help only: the server checks too.
    if (!text.trim()) {
      setNoteError("Write something first: an empty note is not saved.");
      ui.noteInput.focus();
      return;
    }
    if (text.length > NOTE_MAX) {
      setNoteError(`A note can be at most ${NOTE_MAX} characters; this one has ${text.length}.`);
      ui.noteInput.focus();
      return;
    }
    state.saving = true;
    ui.noteSave.setAttribute("aria-busy", "true");
    ui.noteStatus.textContent = "Saving…";
    try {
      const data = await api("POST", `/v1/sessions/${encodeURIComponent(sessionId)}/notes`, { text });
      state.drafts.delete(sessionId);
      if (state.shown !== sessionId) return;
      const note = (data && data.note) || { text, saved_at: new Date().toISOString() };
      ui.notes.append(noteItem(note));
      ui.notesStatus.textContent = "";
      ui.noteInput.value = "";
      renderNoteCount();
      ui.noteStatus.textContent = `Note saved ${formatWhen(note.saved_at) || "now"}.`;
      announce("Your note is saved.");
    } catch (err) {
      ui.noteStatus.textContent = "";
      if (state.shown !== sessionId) return;
      if (err.status === 422) setNoteError(`The note was not saved: ${err.message}`);
      else setNoteError(failureText(err, "The note was not saved (it is still here)"));
      ui.noteInput.focus();
    } finally {
      state.saving = false;
      ui.noteSave.removeAttribute("aria-busy");
    }
  }

  // -- opening and closing ------------------------------------------------------------

  async function open(sessionId) {
    if (!ui.view.isConnected) {
      ui.open.hidden = true; // signed out: the page's main content is gone
      return;
    }
    if (currentView() !== "calllog") {
      ui.back.textContent = BACK_WORDS[baseView()] || "Back";
      showListPart();
      showView("calllog");
    } else if (!sessionId) {
      showListPart();
      ui.title.focus();
    }
    if (typeof sessionId === "string") await openDetail(sessionId);
    else await loadList();
  }

  function back() {
    showListPart();
    showView(baseView(), { focus: false });
    ui.open.focus();
  }

  // -- the ended panel: what the call earned ---------------------------------------------

  async function afterCall(sessionId) {
    state.endedFor = sessionId || null;
    ui.endedEarned.textContent = "";
    ui.endedOpenLog.hidden = !sessionId;
    if (!sessionId) return;
    ui.endedEarned.textContent = "Working out what this call earned…";
    const still = () => state.endedFor === sessionId && !ui.ended.hidden;
    for (const delay of EARNED_DELAYS_MS) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (!still()) return;
      let row = null;
      try {
        const data = await api("GET", "/v1/sessions?limit=5");
        row = ((data && data.sessions) || []).find((s) => s.id === sessionId) || null;
      } catch {
        continue; // asked again after the next delay
      }
      if (!still()) return;
      if (row && !ui.endedDuration.textContent && row.state === "ended") {
        ui.endedDuration.textContent = `Duration: ${durationWords(row)}.`;
      }
      if (row && row.state === "ended" && typeof row.amount_minor === "number") {
        const cur = await currency();
        if (!still()) return;
        const words =
          row.amount_minor > 0
            ? `You earned ${formatMoney(row.amount_minor, cur)} from this call.`
            : "This call earned nothing: it was not charged.";
        ui.endedEarned.textContent = words;
        announce(words);
        return;
      }
    }
    if (still()) ui.endedEarned.textContent = "What this call earned will show in your call log shortly.";
  }

  // -- wiring -------------------------------------------------------------------------

  ui.open.addEventListener("click", () => open());
  ui.back.addEventListener("click", back);
  ui.more.addEventListener("click", showMore);
  ui.detailBack.addEventListener("click", closeDetail);
  ui.noteForm.addEventListener("submit", saveNote);
  ui.noteInput.addEventListener("input", () => {
    if (state.shown) state.drafts.set(state.shown, ui.noteInput.value);
    clearNoteError();
    ui.noteStatus.textContent = "";
    renderNoteCount();
  });
  ui.endedOpenLog.addEventListener("click", () => {
    if (state.endedFor) open(state.endedFor);
  });
  ui.open.hidden = false;

  return { open, back, afterCall };
}
