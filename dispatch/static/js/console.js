// console.js — the therapist console at /console (an ES module, no build step).
//
// Speaks only the public protocol (protocol.js): toggles availability, lists
// the waiting requests live (pool.snapshot / request.new / request.gone),
// claims one, waits for the client to confirm, then runs the call (call.js)
// with chat and private notes, and tells how it ended.
//
// Everything a client wrote (notes, chat) is put on the page as text
// (textContent), never as HTML.
//
// Test hooks (data-testid): availability-toggle, request-list, request-item
// (data-request-id), accept-button, waiting-confirm, call-view, local-video,
// remote-video, peer-joining, chat-input, chat-send, chat-log, chat-message,
// notes-input, notes-saved, end-call, call-ended, live-region, status-line;
// also claim-result, release-claim, confirm-countdown, funds-low,
// media-error, call-status, call-timer, unmute, notify-button, error-message;
// the profile, call log and earnings sections' hooks (profile-open, calllog-open,
// earnings-open, ...) are profile.js's, calllog.js's and earnings.js's; scheduled
// care's (bookings-open, availability-open, followup-open, ...) are schedule.js's,
// availability.js's and followup.js's.
// window.qcConn is the Connection, window.qcCall the current Call.

import { el } from "./dom.js";
import { forgetToken, getToken, keepToken, showSignedOut, signIn, signOut } from "./auth.js";
import { Call } from "./call.js";
import { initCallLog } from "./calllog.js";
import { initEarnings } from "./earnings.js";
import { initProfile } from "./profile.js";
import { initAvailability } from "./availability.js";
import { initFollowUp } from "./followup.js";
import { initSchedule } from "./schedule.js";
import { initFeedbackSummary } from "./feedback.js";
import { initReferralShare } from "./referral.js";
import { initSafeguarding } from "./safeguarding.js";
import { initClientForms } from "./clientforms.js";
import { initMyData } from "./mydata.js";
import {
  Connection,
  describeEndReason,
  formatClock,
  formatDuration,
  newId,
  secondsUntil,
} from "./protocol.js";

const $ = (id) => document.getElementById(id);
const AVAILABLE_KEY = "qc.console.available";
const NOTES_DEBOUNCE_MS = 800;
/** After a reconnect, how long `claim.ok` / `session.ready` may take to come back. */
const RESUME_WAIT_MS = 3000;
const CHAT_MAX = 4000;

// ---- small helpers -----------------------------------------------------------

function sessionGet(key) {
  try {
    return sessionStorage.getItem(key);
  } catch {
    return null;
  }
}

function sessionSet(key, value) {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, value);
  } catch {
    // storage disabled: nothing to remember
  }
}

const SUBDIVISIONS = {
  "GB-ENG": "England",
  "GB-SCT": "Scotland",
  "GB-WLS": "Wales",
  "GB-NIR": "Northern Ireland",
  "US-CA": "California, USA",
  "US-NY": "New York, USA",
  "US-TX": "Texas, USA",
  "US-FL": "Florida, USA",
};

function displayName(type, code) {
  try {
    return new Intl.DisplayNames(["en"], { type }).of(code) || code;
  } catch {
    return code;
  }
}

function regionName(code) {
  if (SUBDIVISIONS[code]) return `${SUBDIVISIONS[code]} (${code})`;
  const country = String(code).split("-")[0];
  const name = displayName("region", country);
  return name && name !== country ? `${name} (${code})` : code;
}

function languageName(code) {
  const name = displayName("language", code);
  return name && name !== code ? `${name} (${code})` : code;
}

function topicsText(topics) {
  return Array.isArray(topics) && topics.length ? topics.join(", ") : "Any topic";
}

function timeOfDay(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function ageSeconds(request, nowMs = Date.now()) {
  const t = Date.parse(request.created_at);
  return Number.isNaN(t) ? 0 : Math.max(0, Math.floor((nowMs - t) / 1000));
}

function isMinor(request) {
  return typeof request.age === "number" && request.age < 18;
}

// ---- the page ----------------------------------------------------------------

const ui = {
  live: $("live"),
  error: $("error"),
  conn: $("conn"),
  who: $("who"),
  views: {
    list: $("view-list"),
    confirm: $("view-confirm"),
    call: $("view-call"),
    profile: $("view-profile"),
    calllog: $("view-calllog"),
    earnings: $("view-earnings"),
    bookings: $("view-bookings"),
    availability: $("view-availability"),
    feedback: $("view-feedback"),
    clientforms: $("view-clientforms"),
  },
  availability: $("availability"),
  availabilityLabel: $("availability-label"),
  availabilityHint: $("availability-hint"),
  notify: $("notify"),
  notifyState: $("notify-state"),
  claimResult: $("claim-result"),
  list: $("request-list"),
  listEmpty: $("list-empty"),
  listCount: $("list-count"),
  confirmCountdown: $("confirm-countdown"),
  confirmRequest: $("confirm-request"),
  release: $("release"),
  callPeer: $("call-peer"),
  callStatus: $("call-status"),
  callTimer: $("call-timer"),
  peerJoining: $("peer-joining"),
  fundsLow: $("funds-low"),
  mediaError: $("media-error"),
  localVideo: $("local-video"),
  remoteVideo: $("remote-video"),
  unmute: $("unmute"),
  endCall: $("end-call"),
  chatLog: $("chat-log"),
  chatForm: $("chat-form"),
  chatInput: $("chat-input"),
  chatSend: $("chat-send"),
  chatCount: $("chat-count"),
  notesInput: $("notes-input"),
  notesStatus: $("notes-status"),
  notesSaved: $("notes-saved"),
  ended: $("ended"),
  endedTitle: $("ended-title"),
  endedReason: $("ended-reason"),
  endedDuration: $("ended-duration"),
  endedNotes: $("ended-notes"),
  endedDismiss: $("ended-dismiss"),
};

/** The call log section (calllog.js); it also says what an ended call earned. */
let callLog = null;
/** "Book a follow-up" on the ended panel (followup.js). */
let followUp = null;

const state = {
  conn: null,
  selfId: null,
  view: null,
  available: false,
  wantAvailable: sessionGet(AVAILABLE_KEY) === "1",
  requests: new Map(), // id -> {request, li, age}
  claim: null, // {requestId, expiresAt, request}
  claimTarget: null, // the request whose Accept was pressed last
  call: null,
  session: null,
  fundsEndsAt: null,
  chat: new Map(), // client_msg_id -> {text, li, failed}
  chatIds: new Set(), // server message ids shown
  notes: { timer: null, sessionId: null, dirty: false, wrote: false, saving: false },
  audio: null,
  errorTimer: null,
  peerJoiningTimer: null,
  resumeTimer: null,
  resumed: false, // a claim.ok / session.ready came since the last reconnect
};

function announce(text) {
  ui.live.textContent = "";
  window.setTimeout(() => {
    ui.live.textContent = text;
  }, 50);
}

function showError(text, { sticky = false } = {}) {
  clearTimeout(state.errorTimer);
  ui.error.textContent = text || "";
  ui.error.hidden = !text;
  if (text && !sticky) state.errorTimer = setTimeout(() => showError(""), 10000);
}

function showClaimResult(text, kind = "info") {
  ui.claimResult.textContent = text || "";
  ui.claimResult.className = `qc-alert qc-alert-${kind}`;
  ui.claimResult.hidden = !text;
}

function showView(name, { focus = true } = {}) {
  const changed = state.view !== name;
  state.view = name;
  for (const [key, section] of Object.entries(ui.views)) section.hidden = key !== name;
  if (changed && focus) {
    const heading = ui.views[name].querySelector("h2[tabindex]");
    heading?.focus({ preventScroll: false });
  }
}

// ---- connection state -----------------------------------------------------------

const CONN_WORDS = {
  idle: "Not connected",
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Connection lost: reconnecting…",
  signed_out: "Signed out",
  closed: "Disconnected",
};

function renderConn(stateName, extra = "") {
  ui.conn.dataset.state = stateName;
  ui.conn.textContent = CONN_WORDS[stateName] + (extra ? ` ${extra}` : "");
}

// ---- availability ----------------------------------------------------------------

function renderAvailability() {
  const on = state.available;
  ui.availability.setAttribute("aria-pressed", on ? "true" : "false");
  ui.availability.classList.toggle("qc-toggle-on", on);
  ui.availabilityLabel.textContent = on ? "Available" : "Away";
  ui.availabilityHint.textContent = on
    ? "You are available: new requests appear below. Press to go away."
    : "You are away: you get no new requests. Press to become available.";
}

async function setAvailable(want) {
  state.wantAvailable = want;
  sessionSet(AVAILABLE_KEY, want ? "1" : null);
  ui.availability.setAttribute("aria-busy", "true");
  try {
    const ok = await state.conn.request({ type: "status", available: want });
    state.available = !!ok.available;
    renderAvailability();
  } catch (err) {
    showError(
      err.code === "disconnected"
        ? "Not connected: your availability will be set when the connection comes back."
        : `Your availability could not be changed: ${err.message}`,
    );
  } finally {
    ui.availability.removeAttribute("aria-busy");
  }
}

// ---- notices: sound, notification ------------------------------------------------------

function ensureAudio() {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return null;
  if (!state.audio) {
    try {
      state.audio = new Ctx();
    } catch {
      return null;
    }
  }
  if (state.audio.state === "suspended") state.audio.resume().catch(() => {});
  return state.audio;
}

/** A short two-tone chime made with the Web Audio API (no audio file). */
function chime() {
  const ctx = state.audio;
  if (!ctx || ctx.state !== "running") return;
  const start = ctx.currentTime + 0.01;
  [660, 880].forEach((freq, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    const t = start + i * 0.16;
    osc.type = "sine";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.2, t + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.14);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t);
    osc.stop(t + 0.15);
  });
}

function renderNotifyState() {
  if (!("Notification" in window)) {
    ui.notify.hidden = true;
    ui.notifyState.hidden = true;
    return;
  }
  const permission = Notification.permission;
  ui.notify.hidden = permission !== "default";
  ui.notifyState.hidden = permission === "default";
  ui.notifyState.textContent =
    permission === "granted"
      ? "Desktop notifications are on."
      : "Desktop notifications are blocked in this browser's settings; you still hear a chime.";
}

async function askNotifications() {
  ensureAudio();
  chime();
  if (!("Notification" in window)) return;
  try {
    await Notification.requestPermission();
  } catch {
    // an old browser with the callback form only: leave it
  }
  renderNotifyState();
}

function requestSummary(r) {
  const parts = [topicsText(r.topics), regionName(r.region), languageName(r.language)];
  if (isMinor(r)) parts.push(`minor, age ${r.age}`);
  return parts.join("; ");
}

function noticeNewRequest(r) {
  const summary = requestSummary(r);
  announce(`New request: ${summary}.`);
  chime();
  if ("Notification" in window && Notification.permission === "granted") {
    try {
      const n = new Notification("New request", { body: summary, tag: "qc-request" });
      n.onclick = () => {
        window.focus();
        n.close();
      };
    } catch {
      // some browsers allow notifications from service workers only
    }
  }
}

// ---- the request list ------------------------------------------------------------------

function buildItem(r) {
  const factsId = `facts-${r.id}`;
  const age = el("strong", { className: "qc-age-clock", text: formatClock(ageSeconds(r)) });
  const head = el("div", { className: "qc-request-head" }, el("span", {}, "Waiting ", age));
  if (isMinor(r)) {
    head.append(
      el("span", {
        className: "qc-badge qc-badge-minor",
        text: `Minor, age ${r.age}${r.guardian_consent ? ", guardian consent given" : ""}`,
      }),
    );
  }
  if (r.reason === "declined" || r.reason === "released" || r.reason === "therapist_lost") {
    head.append(el("span", { className: "qc-badge", text: "Back in the queue" }));
  }
  const facts = el(
    "dl",
    { className: "qc-facts", id: factsId },
    el("dt", { text: "Topics" }),
    el("dd", { text: topicsText(r.topics) }),
    el("dt", { text: "Region" }),
    el("dd", { text: regionName(r.region) }),
    el("dt", { text: "Language" }),
    el("dd", { text: languageName(r.language) }),
    el("dt", { text: "Age" }),
    el("dd", { text: typeof r.age === "number" ? String(r.age) : "Not given" }),
  );
  const notes = r.notes
    ? el("blockquote", { className: "qc-request-notes", text: r.notes })
    : el("p", { className: "qc-muted qc-request-notes", text: "No notes from the client." });
  const accept = el("button", {
    type: "button",
    className: "qc-button qc-button-primary",
    "data-testid": "accept-button",
    "aria-describedby": factsId,
    text: "Accept",
  });
  accept.addEventListener("click", () => claim(r.id, accept));
  const li = el(
    "li",
    { className: "qc-request", "data-testid": "request-item", "data-request-id": r.id },
    head,
    facts,
    el("div", { className: "qc-notes-label qc-muted", text: "Client's notes" }),
    notes,
    el("div", { className: "qc-actions" }, accept),
  );
  return { li, age };
}

function upsertRequest(r) {
  const existing = state.requests.get(r.id);
  const built = buildItem(r);
  if (existing) {
    const hadFocus = existing.li.contains(document.activeElement);
    existing.li.replaceWith(built.li);
    if (hadFocus) built.li.querySelector("button")?.focus();
  }
  state.requests.set(r.id, { request: r, ...built });
}

function removeRequest(id) {
  const item = state.requests.get(id);
  if (!item) return;
  const hadFocus = item.li.contains(document.activeElement);
  item.li.remove();
  state.requests.delete(id);
  if (hadFocus) {
    // Keep keyboard users in the list: the next request, else the heading.
    const next = ui.list.querySelector("[data-testid=accept-button]");
    (next || $("list-title")).focus();
  }
  renderListMeta();
}

function sortRequests() {
  const items = [...state.requests.values()].sort((a, b) => {
    const d = Date.parse(a.request.created_at) - Date.parse(b.request.created_at);
    return d || (a.request.id < b.request.id ? -1 : 1);
  });
  // appendChild moves a node, keeping focus; only move what is out of place.
  items.forEach((item, i) => {
    if (ui.list.children[i] !== item.li) ui.list.insertBefore(item.li, ui.list.children[i] || null);
  });
  renderListMeta();
}

function renderListMeta() {
  const n = state.requests.size;
  ui.listEmpty.hidden = n > 0;
  ui.listCount.textContent = n ? `(${n})` : "";
}

function onSnapshot(frame) {
  const incoming = Array.isArray(frame.requests) ? frame.requests : [];
  const keep = new Set(incoming.map((r) => r.id));
  for (const id of [...state.requests.keys()]) if (!keep.has(id)) removeRequest(id);
  for (const r of incoming) upsertRequest(r);
  sortRequests();
}

function onRequestNew(frame) {
  const r = frame.request;
  if (!r || !r.id) return;
  const isNew = !state.requests.has(r.id);
  upsertRequest(r);
  sortRequests();
  if (isNew) noticeNewRequest(r);
}

function onRequestGone(frame) {
  removeRequest(frame.request_id); // unknown ids are ignored
}

// ---- claiming -----------------------------------------------------------------------------

const CLAIM_ERRORS = {
  taken: "Another therapist has already taken this request.",
  not_found: "This request is no longer waiting: the client cancelled it or it expired.",
  not_eligible: "You can't take this request: it doesn't match your profile, or the client declined you.",
  busy: "You already hold a claim or an open session. Finish it before accepting another request.",
  forbidden: "Your therapist profile is not set up yet, so you can't accept requests. Ask an operator.",
  disconnected: "Not connected to the server. Try again when the connection is back.",
  timeout: "The server did not answer in time. Try again.",
  rate_limited: "Too many actions at once. Wait a moment and try again.",
};

async function claim(requestId, button) {
  ensureAudio();
  showClaimResult("");
  const item = state.requests.get(requestId);
  state.claimTarget = item ? item.request : null;
  button.disabled = true;
  button.textContent = "Accepting…";
  try {
    await state.conn.request({ type: "claim", request_id: requestId });
    // claim.ok is handled by its frame handler (it also comes after a reconnect).
  } catch (err) {
    const message = CLAIM_ERRORS[err.code] || `The request could not be accepted: ${err.message}`;
    showClaimResult(message, "error");
    announce(message);
    if (["taken", "not_found", "not_eligible"].includes(err.code)) removeRequest(requestId);
    if (button.isConnected) {
      button.disabled = false;
      button.textContent = "Accept";
      button.focus();
    }
  }
}

function renderConfirmSummary(r, requestId) {
  ui.confirmRequest.replaceChildren();
  if (!r) {
    ui.confirmRequest.append(el("p", { className: "qc-muted", text: `Request ${requestId}` }));
    return;
  }
  ui.confirmRequest.append(
    el("p", {}, el("strong", { text: "Topics: " }), topicsText(r.topics)),
    el("p", {}, el("strong", { text: "Region: " }), regionName(r.region)),
    el("p", {}, el("strong", { text: "Language: " }), languageName(r.language)),
  );
  if (isMinor(r)) ui.confirmRequest.append(el("p", { className: "qc-badge qc-badge-minor", text: `Minor, age ${r.age}` }));
  if (r.notes) ui.confirmRequest.append(el("blockquote", { className: "qc-request-notes", text: r.notes }));
}

function onClaimOk(frame) {
  const id = frame.request_id;
  state.resumed = true;
  const request =
    (state.claimTarget && state.claimTarget.id === id ? state.claimTarget : null) ||
    state.requests.get(id)?.request ||
    (state.claim && state.claim.requestId === id ? state.claim.request : null);
  state.claim = { requestId: id, expiresAt: frame.expires_at, request };
  removeRequest(id);
  hideEnded();
  showClaimResult("");
  renderConfirmSummary(request, id);
  ui.release.disabled = false;
  tickConfirm();
  showView("confirm");
  announce("You accepted the request. Waiting for the client to confirm.");
}

const CLAIM_ENDS = {
  "claim.declined": () => ["The client declined. You won't see this request again.", "info"],
  "claim.cancelled": () => ["The client cancelled the request.", "info"],
  "claim.released": () => ["You withdrew your offer; the request is back in the queue.", "info"],
  "claim.expired": (f) =>
    f.reason === "therapist_lost"
      ? ["Your claim lapsed while you were disconnected; the request went back to the queue.", "warn"]
      : ["The client did not answer in time, so your claim lapsed.", "warn"],
};

function onClaimEnd(frame) {
  if (state.claim && frame.request_id !== state.claim.requestId) return;
  const [message, kind] = CLAIM_ENDS[frame.type](frame);
  state.claim = null;
  state.claimTarget = null;
  showClaimResult(message, kind);
  announce(message);
  showView("list");
  // A fresh pool.snapshot follows and refills the list.
}

async function releaseClaim() {
  if (!state.claim) return;
  ui.release.disabled = true;
  try {
    await state.conn.request({ type: "claim.release", request_id: state.claim.requestId });
  } catch (err) {
    ui.release.disabled = false;
    showError(`Your offer could not be withdrawn: ${err.message}`);
  }
}

function tickConfirm() {
  if (!state.claim) return;
  const left = secondsUntil(state.claim.expiresAt);
  ui.confirmCountdown.textContent = Number.isNaN(left)
    ? ""
    : left > 0
      ? `The client has ${formatClock(left)} to confirm.`
      : "The time to confirm is running out…";
}

// ---- the call --------------------------------------------------------------------------------

function resetCallUi(session) {
  ui.chatLog.replaceChildren();
  state.chat.clear();
  state.chatIds.clear();
  ui.chatInput.value = "";
  renderChatCount();
  ui.notesInput.value = "";
  ui.notesSaved.hidden = true;
  ui.notesStatus.textContent = "";
  clearTimeout(state.notes.timer);
  state.notes = { timer: null, sessionId: session.id, dirty: false, wrote: false, saving: false };
  clearTimeout(state.peerJoiningTimer);
  ui.peerJoining.hidden = true;
  ui.fundsLow.hidden = true;
  state.fundsEndsAt = null;
  ui.mediaError.hidden = true;
  ui.unmute.hidden = true;
  ui.callTimer.hidden = true;
  ui.callPeer.textContent = "the client";
  ui.callStatus.textContent = "Starting the call…";
  ui.endCall.disabled = false;
  ui.chatSend.disabled = false;
}

const CALL_WORDS = {
  starting: "Starting your camera and microphone…",
  joining: "Joining the call…",
  waiting: "Waiting for the client to join…",
  connecting: "Connecting the video…",
  connected: "Connected.",
  reconnecting: "The connection is interrupted: reconnecting…",
  ending: "Ending the call…",
};

function onCallState(event, detail, call) {
  if (call !== state.call) return;
  switch (event) {
    case "state":
      if (CALL_WORDS[detail.state]) ui.callStatus.textContent = CALL_WORDS[detail.state];
      if (detail.state === "connected") settlePeerJoining();
      break;
    case "media":
      ui.mediaError.textContent = detail.message || "";
      ui.mediaError.hidden = !detail.message;
      break;
    case "joined":
      if (detail.peerJoined) showPeerJoining();
      break;
    case "peer_joined":
      showPeerJoining(detail.rejoin);
      break;
    case "live":
      renderCallTimer();
      break;
    case "autoplay":
      ui.unmute.hidden = !detail.blocked;
      break;
    case "ended":
      onCallEnded(detail);
      break;
    default:
      break;
  }
}

/** The "client is joining" notice lingers a moment after the call connects, then goes. */
const PEER_JOINED_LINGER_MS = 5000;

function showPeerJoining(rejoin = false) {
  clearTimeout(state.peerJoiningTimer);
  const wasHidden = ui.peerJoining.hidden;
  ui.peerJoining.textContent = rejoin ? "The client is back and rejoining the call." : "The client is joining the call.";
  ui.peerJoining.hidden = false;
  if (wasHidden || rejoin) announce(ui.peerJoining.textContent);
}

function settlePeerJoining() {
  if (ui.peerJoining.hidden) return;
  ui.peerJoining.textContent = "The client is in the call.";
  clearTimeout(state.peerJoiningTimer);
  state.peerJoiningTimer = setTimeout(() => {
    ui.peerJoining.hidden = true;
  }, PEER_JOINED_LINGER_MS);
}

function renderCallTimer() {
  const call = state.call;
  if (!call || !call.live || !call.startedAt) {
    ui.callTimer.hidden = true;
    return;
  }
  const t = Date.parse(call.startedAt);
  if (Number.isNaN(t)) return;
  ui.callTimer.hidden = false;
  ui.callTimer.textContent = `In session for ${formatClock((Date.now() - t) / 1000)}`;
}

function renderFunds() {
  if (state.fundsEndsAt === null) return;
  const left = Math.max(0, Math.ceil((state.fundsEndsAt - Date.now()) / 1000));
  ui.fundsLow.textContent = `The client's balance runs out in about ${formatDuration(left)}; the call will end then.`;
}

async function startCall(session) {
  state.claim = null;
  state.claimTarget = null;
  state.session = session;
  hideEnded();
  showClaimResult("");
  resetCallUi(session);
  showView("call");
  announce("The client accepted. The call is starting.");
  const call = new Call({
    conn: state.conn,
    session,
    selfId: state.selfId,
    role: "therapist",
    localVideo: ui.localVideo,
    remoteVideo: ui.remoteVideo,
    onState: onCallState,
    controls: { root: $("call-controls"), lost: $("connection-lost") },
  });
  state.call = call;
  if (session.state === "live") renderCallTimer();
  loadClientName(session);
  loadTranscript(session);
  try {
    await call.start();
  } catch (err) {
    console.error("the call could not start", err);
    if (call === state.call) {
      ui.callStatus.textContent = "The call could not start in this browser. Chat still works.";
    }
  }
}

function onSessionReady(frame) {
  const session = frame.session;
  if (!session || !session.id) return;
  state.resumed = true;
  if (state.call && state.call.sessionId === session.id) {
    // A reconnect inside the grace: the Call joins again and restarts ICE.
    state.session = { ...state.session, ...session };
    announce("Reconnected to the call.");
    return;
  }
  if (state.call) state.call.close();
  startCall(session);
}

function onCallEnded({ reason, duration_s: duration }) {
  const session = state.session;
  flushNotes();
  state.call = null;
  state.session = null;
  state.fundsEndsAt = null;
  failPendingChats();
  const words = reason ? describeEndReason(reason, "therapist") : "The call has ended.";
  ui.endedReason.textContent = words;
  ui.endedDuration.textContent =
    typeof duration === "number" ? `Duration: ${formatDuration(duration)}.` : "";
  ui.ended.dataset.reason = reason || "";
  ui.endedNotes.hidden = !state.notes.wrote;
  ui.endedNotes.textContent = state.notes.wrote
    ? "Your notes are kept with the session; only you can read them."
    : "";
  ui.ended.hidden = false;
  if (session) ui.ended.dataset.sessionId = session.id;
  callLog?.afterCall(session ? session.id : null); // what it earned, once the charge is written
  followUp?.afterCall(session); // "Book a follow-up" for this client
  showView("list", { focus: false });
  ui.endedTitle.focus();
  announce(`Call ended. ${words}${typeof duration === "number" ? ` Duration ${formatDuration(duration)}.` : ""}`);
}

function hideEnded() {
  ui.ended.hidden = true;
}

async function loadClientName(session) {
  try {
    const data = await state.conn.http("GET", "/v1/sessions?limit=5");
    const row = (data.sessions || []).find((s) => s.id === session.id);
    if (row && row.name && state.session && state.session.id === session.id) {
      ui.callPeer.textContent = row.name;
    }
  } catch {
    // the name is a nicety
  }
}

async function loadNotes(session) {
  try {
    const data = await state.conn.http("GET", `/v1/sessions/${encodeURIComponent(session.id)}/notes`);
    const notes = data.notes || [];
    if (!state.session || state.session.id !== session.id || !notes.length) return;
    if (ui.notesInput.value === "" && !state.notes.dirty) {
      const last = notes[notes.length - 1];
      ui.notesInput.value = last.text;
      state.notes.wrote = true;
      ui.notesSaved.textContent = `Saved at ${timeOfDay(last.saved_at) || "earlier"}`;
      ui.notesSaved.hidden = false;
    }
  } catch {
    // the notes stay on the server; the pane just starts empty
  }
}

async function loadTranscript(session) {
  if (session.state !== "live") return; // a new session has no chat yet
  loadNotes(session);
  try {
    const data = await state.conn.http("GET", `/v1/sessions/${encodeURIComponent(session.id)}/transcript`);
    if (!state.session || state.session.id !== session.id) return;
    for (const m of data.messages || []) addChatMessage(m);
  } catch {
    // the history is a nicety after a reload
  }
}

// ---- chat ------------------------------------------------------------------------------------------

function renderChatCount() {
  const n = ui.chatInput.value.length;
  ui.chatCount.textContent = `${n} / ${CHAT_MAX} characters. Enter sends, Shift+Enter starts a new line.`;
  ui.chatCount.classList.toggle("qc-counter-full", n >= CHAT_MAX);
}

function chatItem({ mine, text, sentAt, pending }) {
  const who = el("span", { className: "qc-chat-who", text: mine ? "You" : "Client" });
  const time = el("span", { className: "qc-chat-time", text: sentAt ? timeOfDay(sentAt) : "" });
  const body = el("p", { className: "qc-chat-text", text });
  const status = el("span", { className: "qc-chat-status", text: pending ? "Sending…" : "" });
  return el(
    "li",
    {
      className: `qc-chat-message ${mine ? "qc-chat-mine" : "qc-chat-theirs"}${pending ? " qc-chat-pending" : ""}`,
      "data-testid": "chat-message",
      "data-from": mine ? "self" : "peer",
    },
    el("div", { className: "qc-chat-meta" }, who, " ", time, " ", status),
    body,
  );
}

function scrollChat() {
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

function addChatMessage(m) {
  if (!state.session || m.session_id !== state.session.id) return;
  if (m.id && state.chatIds.has(m.id)) return;
  if (m.id) state.chatIds.add(m.id);
  const mine = m.from === state.selfId;
  const li = chatItem({ mine, text: m.text, sentAt: m.sent_at });
  li.dataset.messageId = m.id || "";
  const pending = mine && m.client_msg_id ? state.chat.get(m.client_msg_id) : null;
  if (pending) {
    state.chat.delete(m.client_msg_id);
    pending.li.replaceWith(li);
  } else {
    ui.chatLog.append(li);
  }
  scrollChat();
}

function sendChat() {
  const text = ui.chatInput.value;
  if (!text.trim() || !state.session) return;
  if (text.length > CHAT_MAX) {
    showError(`A message can be at most ${CHAT_MAX} characters.`);
    return;
  }
  const clientMsgId = newId("m");
  const li = chatItem({ mine: true, text, pending: true });
  li.dataset.clientMsgId = clientMsgId;
  ui.chatLog.append(li);
  scrollChat();
  state.chat.set(clientMsgId, { text, li, sessionId: state.session.id });
  ui.chatInput.value = "";
  renderChatCount();
  deliverChat(clientMsgId);
}

async function deliverChat(clientMsgId) {
  const entry = state.chat.get(clientMsgId);
  if (!entry) return;
  const status = entry.li.querySelector(".qc-chat-status");
  try {
    await state.conn.request({
      type: "chat.send",
      session_id: entry.sessionId,
      text: entry.text,
      client_msg_id: clientMsgId,
    });
    // the chat.message frame (answer and broadcast) replaces the pending line
  } catch (err) {
    if (!state.chat.has(clientMsgId)) return;
    if (err.code === "disconnected" || err.code === "timeout") {
      status.textContent = "Waiting for the connection…"; // re-sent on reconnect (same client_msg_id)
    } else {
      state.chat.delete(clientMsgId);
      entry.li.classList.add("qc-chat-failed");
      status.textContent = `Not sent: ${err.message}`;
    }
  }
}

function resendPendingChats() {
  for (const id of state.chat.keys()) deliverChat(id);
}

function failPendingChats() {
  for (const entry of state.chat.values()) {
    entry.li.classList.add("qc-chat-failed");
    const status = entry.li.querySelector(".qc-chat-status");
    if (status) status.textContent = "Not sent: the call ended.";
  }
  state.chat.clear();
}

// ---- notes -----------------------------------------------------------------------------------------

function onNotesInput() {
  state.notes.dirty = true;
  state.notes.wrote = true;
  ui.notesSaved.hidden = true;
  ui.notesStatus.textContent = "Saving soon…";
  clearTimeout(state.notes.timer);
  state.notes.timer = setTimeout(saveNotes, NOTES_DEBOUNCE_MS);
}

async function saveNotes() {
  clearTimeout(state.notes.timer);
  state.notes.timer = null;
  const notes = state.notes;
  if (!notes.dirty || !notes.sessionId) return;
  const text = ui.notesInput.value;
  notes.dirty = false;
  notes.saving = true;
  ui.notesStatus.textContent = "Saving…";
  try {
    const saved = await state.conn.request({ type: "note.save", session_id: notes.sessionId, text });
    if (state.notes !== notes) return;
    if (!notes.dirty) {
      ui.notesStatus.textContent = "";
      ui.notesSaved.textContent = `Saved at ${timeOfDay(saved.saved_at) || "now"}`;
      ui.notesSaved.hidden = false;
    }
  } catch (err) {
    if (state.notes !== notes) return;
    notes.dirty = true; // try again
    ui.notesStatus.textContent =
      err.code === "disconnected" || err.code === "timeout"
        ? "Not saved yet: waiting for the connection."
        : `Not saved: ${err.message}`;
  } finally {
    notes.saving = false;
  }
}

function flushNotes() {
  if (state.notes.timer !== null || state.notes.dirty) saveNotes(); // accepted after the end too
}

// ---- after a reconnect ----------------------------------------------------------------------

/**
 * After a reconnect the server sends `claim.ok` / `session.ready` again for a
 * claim or session that is still ours. When neither comes, it lapsed while we
 * were away (past the reconnect grace): find out how and say so.
 */
function checkResumed() {
  clearTimeout(state.resumeTimer);
  state.resumed = false;
  if (!state.claim && !state.call) return;
  state.resumeTimer = setTimeout(async () => {
    if (state.resumed) return;
    if (state.claim && !state.call) {
      const message = "Your claim lapsed while you were disconnected; the request went back to the queue.";
      state.claim = null;
      showClaimResult(message, "warn");
      announce(message);
      showView("list");
      return;
    }
    const call = state.call;
    if (!call) return;
    let row = null;
    try {
      const data = await state.conn.http("GET", "/v1/sessions?limit=20");
      row = (data.sessions || []).find((s) => s.id === call.sessionId) || null;
    } catch {
      return; // cannot tell: leave the call as it is
    }
    if (call !== state.call || state.resumed) return;
    if (row && row.state === "ended") {
      call.finish({ reason: row.end_reason, duration_s: row.duration_s });
    }
  }, RESUME_WAIT_MS);
}

// ---- clocks ----------------------------------------------------------------------------------------

function tick() {
  const now = Date.now();
  for (const { request, age } of state.requests.values()) {
    age.textContent = formatClock(ageSeconds(request, now));
  }
  tickConfirm();
  renderCallTimer();
  renderFunds();
}

// ---- wiring ------------------------------------------------------------------------------------------

function wire(conn) {
  conn.on("state", ({ state: s }) => renderConn(s));
  conn.on("reconnecting", ({ delayMs }) => {
    renderConn("reconnecting", `(next try in ${Math.max(1, Math.round(delayMs / 1000))} s)`);
  });
  conn.on("open", ({ welcome, reconnected }) => {
    state.selfId = welcome.user && welcome.user.id;
    renderConn("open");
    // Availability is not kept across connections (docs §6.2): ask again.
    state.available = false;
    renderAvailability();
    if (state.wantAvailable) setAvailable(true);
    if (reconnected) {
      checkResumed();
      resendPendingChats();
      if (state.notes.dirty) saveNotes();
    }
  });
  conn.on("signedout", () => {
    forgetToken();
    state.call?.close();
    showSignedOut("Your sign-in is no longer valid (it expired or was refused). Please sign in again.");
  });
  conn.on("status.ok", (f) => {
    state.available = !!f.available;
    renderAvailability();
  });
  conn.on("pool.snapshot", onSnapshot);
  conn.on("request.new", onRequestNew);
  conn.on("request.gone", onRequestGone);
  conn.on("claim.ok", onClaimOk);
  for (const type of ["claim.declined", "claim.cancelled", "claim.expired", "claim.released"]) {
    conn.on(type, onClaimEnd);
  }
  conn.on("session.ready", onSessionReady);
  conn.on("chat.message", addChatMessage);
  conn.on("session.funds_low", (f) => {
    if (!state.session || f.session_id !== state.session.id) return;
    state.fundsEndsAt = Date.now() + (Number(f.seconds_left) || 0) * 1000;
    renderFunds();
    ui.fundsLow.hidden = false;
  });
  conn.on("error", (f) => {
    if (f.code === "rate_limited") showError("Too many actions at once; slow down a little.");
    else if (f.code === "unavailable") showError("The service is having trouble right now; try again shortly.");
    else if (f.code === "conflict") return; // an rtc.signal held too long: negotiation retries
    else if (!state.session && (f.code === "not_found" || f.code === "forbidden")) return; // late frames of an ended call
    else showError(`The server refused an action: ${f.message}`);
  });
}

function wireUi() {
  ui.availability.addEventListener("click", () => {
    ensureAudio();
    setAvailable(!state.available);
  });
  ui.notify.addEventListener("click", askNotifications);
  ui.release.addEventListener("click", releaseClaim);
  ui.endedDismiss.addEventListener("click", () => {
    hideEnded();
    $("list-title").focus();
  });
  ui.endCall.addEventListener("click", async () => {
    const call = state.call;
    if (!call) return;
    ui.endCall.disabled = true;
    await call.hangUp(); // its "ended" event shows what happened
  });
  ui.unmute.addEventListener("click", () => state.call?.unmuteRemote());
  ui.chatForm.addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat();
  });
  ui.chatInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendChat();
    }
  });
  ui.chatInput.addEventListener("input", renderChatCount);
  ui.notesInput.addEventListener("input", onNotesInput);
  ui.notesInput.addEventListener("blur", flushNotes);
  $("sign-out").addEventListener("click", async () => {
    const call = state.call;
    if (call) await Promise.race([call.hangUp(), new Promise((r) => setTimeout(r, 3000))]);
    state.conn?.close();
    signOut();
  });
}

function main() {
  const auth = signIn({ role: "therapist" });
  if (!auth) return;
  const { token, claims } = auth;
  state.selfId = claims.sub;
  ui.who.textContent = `${claims.name || claims.sub} (therapist)`;
  wireUi();
  initProfile({
    token: () => getToken() || token, // keepToken() keeps renewed tokens where getToken() reads
    therapistId: claims.sub,
    announce,
    showView,
    currentView: () => state.view,
  });
  const section = {
    token: () => getToken() || token,
    announce,
    showView,
    currentView: () => state.view,
    baseView: () => (state.call ? "call" : state.claim ? "confirm" : "list"), // where "Back" goes
  };
  callLog = initCallLog({ ...section, therapistId: claims.sub });
  initEarnings(section);
  initFeedbackSummary({ ...section, therapistId: claims.sub }); // clients' ratings and comments
  initReferralShare({ token: section.token, announce }); // the share link, in the profile view
  initAvailability({ ...section, therapistId: claims.sub });
  // "Client forms" (clientforms.js): from a booking, or from the call.
  const clientForms = initClientForms(section);
  $("call-client-forms").addEventListener("click", (event) => {
    const session = state.session;
    const peer = ui.callPeer.textContent.trim();
    const named = peer && peer !== "the client" ? peer.split(/\s+/)[0] : ""; // a first name, as the call log shows
    if (session && session.client_id) clientForms.open(session.client_id, named, event.currentTarget);
  });
  initSchedule({
    ...section,
    openForms: (clientId, name, opener) => clientForms.open(clientId, name, opener),
    // A booked call: the call view (already open when the server pushed session.ready).
    onSession: (session) =>
      state.call && state.call.sessionId === session.id ? showView("call") : onSessionReady({ session }),
    openNotes: (sessionId) => callLog.open(sessionId),
  });
  followUp = initFollowUp({ token: section.token, therapistId: claims.sub, announce });
  // "Raise a safeguarding concern": about the call, else the one that just ended.
  initSafeguarding({
    token: section.token,
    announce,
    sessionId: () =>
      (state.session && state.session.id) || (!ui.ended.hidden && ui.ended.dataset.sessionId) || null,
  });
  renderAvailability();
  renderNotifyState();
  renderListMeta();
  renderChatCount();
  showView("list", { focus: false });
  const conn = new Connection({ token, autoConnect: false });
  state.conn = conn;
  window.qcConn = conn;
  keepToken(conn);
  wire(conn);
  initMyData(conn); // "Download my data" (PROTOCOL.md §10)
  renderConn("connecting");
  conn.connect();
  setInterval(tick, 1000);
}

main();
