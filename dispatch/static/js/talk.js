// The client's "talk now" page (/talk).
//
// Flow: form -> POST /v1/requests -> waiting (queue position from
// request.state, elapsed time, cancel = DELETE /v1/requests/{id}) -> the
// therapist's card on request.offer (accept with the terms ticked, or
// decline) -> session.ready -> the call (shared Call class: video, chat,
// funds-low banner, end) -> a plain-words message for however it ended.
//
// A reconnect resumes: the server sends request.state / request.offer /
// session.ready again after `welcome`; when it sends nothing, the request or
// session ended while we were away and we ask the HTTP API how.
//
// The money around it lives in its own modules: wallet.js (price, balance,
// top-ups, what a call cost), meter.js (the running cost in a call),
// history.js (past sessions and transactions), draft.js (the form kept while
// the client pays); call.js wires the in-call controls (callcontrols.js).
//
// Test hooks: see data-testid attributes in talk.html; window.qcTalk exposes
// the page state for tests.

import {
  Connection,
  ProtocolError,
  httpRequest,
  newId,
  formatClock,
  describeEndReason,
} from "./protocol.js";
import { Call } from "./call.js";
import { signIn, signOut, forgetToken, keepToken, showSignedOut } from "./auth.js";
import {
  initWallet,
  loadWallet,
  currentWallet,
  pricePerMinute,
  openTopup,
  handleTopupReturn,
  showEndFacts,
} from "./wallet.js";
import { initHistory, showHistory, refreshHistory } from "./history.js";
import { initMeter, meterWaiting, startMeter, stopMeter } from "./meter.js";
import { keepDraft } from "./draft.js";
import { formatMoney } from "./money.js";
import { initTalkBookings } from "./talkbookings.js";
import { initEndFeedback } from "./feedback.js";
import { linkStoredCode } from "./referral.js";
import { initMyData } from "./mydata.js";

const TERMS_VERSION = "2026-11-01";
const NOTES_MAX = 2000;
const STORE_KEY = "qc.talk";
/** How long after `welcome` the resume frames may take before we ask over HTTP. */
const RESUME_WAIT_MS = 2000;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------ plain words

/** What to tell the client when its request or session ends. */
export const END_MESSAGES = {
  no_therapist:
    "No therapist was available to take your request in time. Please try again a little later.",
  client_no_response:
    "The offer timed out: it was not accepted or declined in time, so the therapist was released.",
  cancelled: "You cancelled your request. Nobody will call you.",
  ended_by_client: "You ended the call.",
  ended_by_therapist: "Your therapist ended the call.",
  peer_lost: "The call ended because the connection was lost for too long.",
  funds_exhausted:
    "The call ended because your wallet ran out of credit. Top up your wallet to talk again.",
};

const WAITING_NOTES = {
  declined: "You declined that therapist. We are looking for another one.",
  released: "That therapist could not take your request after all. We are looking for another one.",
  therapist_lost: "We lost touch with that therapist. We are looking for another one.",
};

export function formatElapsed(ms) {
  return formatClock(Math.floor(ms / 1000));
}

function spokenDuration(seconds) {
  const s = Math.max(0, Math.round(seconds || 0));
  const m = Math.floor(s / 60);
  const parts = [];
  if (m) parts.push(`${m} minute${m === 1 ? "" : "s"}`);
  if (s % 60 || !m) parts.push(`${s % 60} second${s % 60 === 1 ? "" : "s"}`);
  return parts.join(" ");
}

// ------------------------------------------------------------- page state

const state = {
  token: "",
  me: "",
  conn: null,
  view: "",
  request: null, // R
  offer: null, // request.offer frame
  therapist: null, // public profile of the offered / matched therapist
  session: null, // S
  call: null,
  ended: false,
  resumeTimer: 0,
  heardSince: true, // a resume frame arrived since the last welcome
  pendingChat: new Map(), // client_msg_id -> text, not yet echoed
  shownMessages: new Set(),
  idemKey: "",
  fundsTimer: 0,
  fundsEnd: 0,
  endRequested: false,
  stateSeq: 0, // request.state frames seen: an HTTP answer older than one is not applied
  draft: null, // draft.js: the form kept in sessionStorage
  walletReady: null, // the first GET /v1/wallet
};

function remember() {
  try {
    const keep = {
      requestId: state.request && !isFinal(state.request) ? state.request.id : null,
      sessionId: state.session && !state.ended ? state.session.id : null,
      therapist: state.therapist,
    };
    sessionStorage.setItem(STORE_KEY, JSON.stringify(keep));
  } catch {
    // storage disabled: resuming after a reload relies on the server alone
  }
}

function recalled() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE_KEY) || "null") || {};
  } catch {
    return {};
  }
}

function isFinal(r) {
  return r.state === "cancelled" || r.state === "expired" || r.state === "matched";
}

// -------------------------------------------------------------- utilities

let liveSeq = 0;
/** Say `text` through the ARIA live region (also when it repeats). */
function announce(text) {
  const live = $("live");
  const seq = ++liveSeq;
  live.textContent = "";
  window.setTimeout(() => {
    if (seq === liveSeq) live.textContent = text;
  }, 60);
}

function showError(text) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
}

const VIEWS = ["form", "waiting", "offer", "call", "end"];

function show(view, { focus = true } = {}) {
  if (state.view === view) return;
  state.view = view;
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  document.body.dataset.view = view;
  showHistory(view === "form" || view === "end");
  talkBookings?.show(view === "form" || view === "end");
  if (view === "waiting") startTicking();
  else stopTicking();
  if (focus) {
    const heading = $(`view-${view}`).querySelector("h2");
    if (heading) heading.focus({ preventScroll: false });
  }
}

const CONN_WORDS = {
  idle: "Connecting…",
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
  signed_out: "Signed out",
  closed: "Offline",
};

/** Mirror the connection's state in the bar (data-testid="status-line"). */
function setConn(connState) {
  const el = $("conn");
  el.dataset.state = connState;
  el.textContent = CONN_WORDS[connState] || connState;
}

/** A request() that failed because the connection dropped (not an answer from the server). */
function isOffline(err) {
  return !err || err.code === "disconnected" || err.code === "timeout";
}

/**
 * One HTTP call through the shared helper, as {status, body}: a 2xx answer is
 * status 200 with its JSON body; an error answer its status and
 * {error: {code, message, ...}}; a network failure status 0.
 */
async function api(method, path, body, headers) {
  try {
    const data = await httpRequest(state.token, method, path, body, headers ? { headers } : {});
    return { status: 200, body: data };
  } catch (err) {
    if (err instanceof ProtocolError && typeof err.status === "number") {
      const detail = { ...(err.detail || {}) };
      delete detail.status;
      return {
        status: err.status,
        body: { error: { ...detail, code: err.code, message: err.message, field: err.field } },
      };
    }
    return { status: 0, body: null };
  }
}

// -------------------------------------------------------------------- form

const FIELD_IDS = {
  topics: "topics",
  notes: "notes",
  region: "region",
  language: "language",
  age: "age",
  guardian_consent: "guardian-consent",
};

function fieldError(field, text) {
  const p = $(`err-${field}`);
  if (!p) return false;
  p.textContent = text || "";
  p.hidden = !text;
  const input = $(FIELD_IDS[field]);
  if (input) {
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
  return true;
}

function clearFieldErrors() {
  for (const f of Object.keys(FIELD_IDS)) fieldError(f, "");
}

function ageValue() {
  const raw = $("age").value.trim();
  if (raw === "") return { ok: true, age: null };
  if (!/^\d{1,3}$/.test(raw)) return { ok: false };
  const age = Number(raw);
  return age <= 130 ? { ok: true, age } : { ok: false };
}

function updateGuardian() {
  const { ok, age } = ageValue();
  const minor = ok && age !== null && age < 18;
  const box = $("guardian");
  box.hidden = !minor;
  $("guardian-consent").required = minor;
  if (!minor) fieldError("guardian_consent", "");
}

function updateCounter() {
  const n = $("notes").value.length;
  const counter = $("notes-count");
  counter.textContent = `${n} / ${NOTES_MAX} characters`;
  counter.classList.toggle("qc-counter-near", n > NOTES_MAX - 100);
}

function readForm() {
  const topics = [...document.querySelectorAll('#topics input[name="topics"]:checked')].map(
    (i) => i.value,
  );
  const body = {
    region: $("region").value,
    language: $("language").value,
    topics,
    notes: $("notes").value,
  };
  const errors = {};
  if (body.notes.length > NOTES_MAX) errors.notes = `Notes can be at most ${NOTES_MAX} characters.`;
  const { ok, age } = ageValue();
  if (!ok) errors.age = "Enter your age as a whole number from 0 to 130, or leave it empty.";
  else if (age !== null) {
    body.age = age;
    if (age < 18) {
      if ($("guardian-consent").checked) body.guardian_consent = true;
      else errors.guardian_consent = "A parent or guardian must agree before someone under 18 can talk to a therapist: tick the box.";
    }
  }
  return { body, errors };
}

function showFieldErrors(errors, summary) {
  let first = null;
  for (const [field, text] of Object.entries(errors)) {
    if (fieldError(field, text) && !first) first = field;
  }
  showError(summary || Object.values(errors)[0] || "");
  if (first) {
    const el = first === "topics" ? document.querySelector("#topics input") : $(FIELD_IDS[first]);
    el?.focus();
  }
}

async function onTalkNow(event) {
  event.preventDefault();
  clearFieldErrors();
  showError("");
  const { body, errors } = readForm();
  if (Object.keys(errors).length) {
    showFieldErrors(errors, "Please check the form: " + Object.values(errors)[0]);
    return;
  }
  const button = $("talk-now");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  // The same key for a retry after a network failure: the server answers the
  // first request instead of making a second one.
  if (!state.idemKey) state.idemKey = newId();
  try {
    const seq = state.stateSeq;
    const res = await api("POST", "/v1/requests", body, { "Idempotency-Key": state.idemKey });
    res.seq = seq;
    if (res.status !== 0) state.idemKey = "";
    await handleCreateAnswer(res);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

async function handleCreateAnswer(res) {
  const err = (res.body && res.body.error) || {};
  if (res.status === 200 && res.body && res.body.request) {
    // The websocket may have told us more already (claimed, an offer): its
    // frames are newer than this answer.
    const r = res.body.request;
    state.draft?.clear();
    if (!(state.request && state.request.id === r.id)) applyHttpRequest(r, res.seq);
    return;
  }
  if (res.status === 0) {
    showError("Could not reach the service. Check your connection and press Talk now again.");
    return;
  }
  if (res.status === 402) {
    // Not a dead end: the top-up picker opens, and what was typed is kept.
    const wallet = await loadWallet();
    const currency = (wallet || currentWallet())?.currency;
    const balance = formatMoney(err.balance_minor, currency);
    const needed = formatMoney(err.required_minor, currency);
    const text =
      `Not enough credit to talk now: your balance is ${balance || "too low"}` +
      (needed ? ` and at least ${needed} is needed.` : ".") +
      " Top up below; what you typed stays.";
    openTopup({ message: text, focus: true });
    announce(text);
    return;
  }
  if (res.status === 409) {
    announce("You already have a request open. Resuming it.");
    await resumeExisting();
    return;
  }
  if (res.status === 422) {
    const field = err.field || "";
    const message = fieldMessage(err);
    if (field && FIELD_IDS[field]) {
      if (field === "guardian_consent") $("guardian").hidden = false;
      showFieldErrors({ [field]: message }, `Please check the form: ${message}`);
    } else showError(`Please check the form: ${message}`);
    return;
  }
  if (res.status === 401) {
    signOut();
    return;
  }
  if (res.status === 429) {
    showError("Too many attempts in a short time. Please wait a few seconds and try again.");
    return;
  }
  showError(err.message ? `Something went wrong: ${err.message}` : "Something went wrong. Please try again.");
}

function fieldMessage(err) {
  if (err.code === "consent_required")
    return "A parent or guardian must agree before someone under 18 can talk to a therapist: tick the box.";
  return err.message || "This value is not valid.";
}

/** After a 409: find the request (or session) this client already has open. */
async function resumeExisting() {
  const { requestId } = recalled();
  if (requestId) {
    const seq = state.stateSeq;
    const res = await api("GET", `/v1/requests/${encodeURIComponent(requestId)}`);
    if (res.status === 200 && res.body && res.body.request && !isFinal(res.body.request)) {
      applyHttpRequest(res.body.request, seq);
      return;
    }
  }
  // Ask the server to tell us again: a fresh connection gets request.state,
  // request.offer or session.ready right after `welcome`.
  state.heardSince = false;
  const heard = await new Promise((resolve) => {
    const probe = new Connection({ token: state.token });
    let found = false;
    let timer = 0;
    const finish = () => {
      window.clearTimeout(timer);
      probe.close();
      resolve(found);
    };
    timer = window.setTimeout(finish, 4000);
    // The resume frames come together (request.state then request.offer):
    // keep listening a moment after the first.
    const got = (handler) => (frame) => {
      handler(frame);
      if (!found) {
        found = true;
        window.clearTimeout(timer);
        timer = window.setTimeout(finish, 500);
      }
    };
    probe.on("request.state", got(onRequestState));
    probe.on("request.offer", got(onOffer));
    probe.on("session.ready", got(onSessionReady));
  });
  if (!heard && !state.heardSince) {
    showError("You already have a request or a call open, but it could not be found. Please reload the page.");
  }
}

// ----------------------------------------------------------------- waiting

let tick = 0;
function startTicking() {
  if (!tick) tick = window.setInterval(renderClock, 1000);
  renderClock();
}
function stopTicking() {
  if (tick) window.clearInterval(tick);
  tick = 0;
}

function renderClock() {
  const r = state.request;
  if (r && r.created_at) {
    const since = Date.parse(r.created_at);
    if (Number.isFinite(since)) $("elapsed").textContent = formatElapsed(Date.now() - since);
  }
}

let offerTick = 0;
function renderOfferExpiry() {
  const o = state.offer;
  const el = $("offer-expiry");
  if (!o || !o.expires_at) {
    el.textContent = "";
    return;
  }
  const left = Math.max(0, Math.round((Date.parse(o.expires_at) - Date.now()) / 1000));
  el.textContent = `Please answer within ${formatElapsed(left * 1000)}.`;
}

function startOfferTick() {
  if (!offerTick) offerTick = window.setInterval(renderOfferExpiry, 1000);
  renderOfferExpiry();
}
function stopOfferTick() {
  if (offerTick) window.clearInterval(offerTick);
  offerTick = 0;
}

function showWaiting(r, previousView) {
  const waiting = r.state === "waiting";
  $("waiting-queue").hidden = !waiting;
  $("waiting-claimed").hidden = waiting;
  $("waiting-claimed").textContent =
    r.state === "matched" ? "Connecting you to your therapist…" : "A therapist is looking at your request…";
  const oldPos = $("queue-position").textContent;
  const pos = waiting && typeof r.position === "number" ? String(r.position) : "";
  $("queue-position").textContent = pos;
  const note = waiting ? WAITING_NOTES[r.reason] || "" : "";
  $("waiting-note").textContent = note;
  $("waiting-note").hidden = !note;
  $("cancel-request").hidden = r.state === "matched";
  const fresh = state.view !== "waiting";
  show("waiting", { focus: fresh });
  renderClock();
  if (waiting) {
    if (note && previousView === "offer") announce(note);
    else if (pos && (fresh || pos !== oldPos)) announce(`You are number ${pos} in the queue.`);
  } else if (fresh && r.state === "claimed") announce("A therapist is looking at your request.");
}

async function onCancel() {
  const r = state.request;
  if (!r) return;
  const button = $("cancel-request");
  button.disabled = true;
  try {
    const res = await api("DELETE", `/v1/requests/${encodeURIComponent(r.id)}`);
    if (res.status === 200 && res.body && res.body.request) {
      applyRequest(res.body.request); // final: nothing newer can come
    } else if (res.status === 409) {
      showError("Too late to cancel: your request has already moved on.");
    } else if (res.status === 404) {
      showEnd(END_MESSAGES.cancelled);
    } else if (res.status === 0) {
      showError("Could not reach the service to cancel. Please try again.");
    } else {
      const err = (res.body && res.body.error) || {};
      showError(err.message || "Could not cancel. Please try again.");
    }
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------- offer

function renderTherapist(t) {
  const photo = $("therapist-photo");
  const initials = $("therapist-initials");
  const name = (t && t.name) || "Your therapist";
  if (t && t.photo_url) {
    photo.src = t.photo_url;
    photo.alt = `Photo of ${name}`;
    photo.hidden = false;
    initials.hidden = true;
  } else {
    photo.removeAttribute("src");
    photo.alt = "";
    photo.hidden = true;
    initials.textContent = name
      .split(/\s+/)
      .filter(Boolean)
      .slice(0, 2)
      .map((w) => w[0].toUpperCase())
      .join("");
    initials.hidden = false;
  }
  $("therapist-name").textContent = name;
  $("therapist-bio").textContent = (t && t.bio) || "";
  const price = pricePerMinute();
  $("therapist-price").textContent = price
    ? `${price}, charged per started minute once you are both in the call.`
    : "";
  $("therapist-price").hidden = !price;
  const topics = (t && Array.isArray(t.topics) && t.topics) || [];
  $("therapist-topics").textContent = topics.length ? `Focus: ${topics.join(", ")}` : "";
}

function onOffer(frame) {
  state.heardSince = true;
  if (state.ended && state.session) return;
  const same =
    state.offer &&
    state.offer.request_id === frame.request_id &&
    (state.offer.therapist || {}).id === (frame.therapist || {}).id;
  state.offer = frame;
  state.therapist = frame.therapist || null;
  remember();
  renderTherapist(state.therapist);
  if (!same) {
    // A new offer (not the same one again after a reconnect): ask afresh.
    $("terms").checked = false;
    termsError("");
  }
  const fresh = state.view !== "offer";
  show("offer");
  startOfferTick();
  if (fresh) {
    const name = (frame.therapist && frame.therapist.name) || "A therapist";
    announce(`${name} can see you now. Accept or decline.`);
  }
}

function termsError(text) {
  const p = $("err-terms");
  p.textContent = text;
  p.hidden = !text;
  if (text) $("terms").setAttribute("aria-invalid", "true");
  else $("terms").removeAttribute("aria-invalid");
}

async function onAccept(event) {
  event.preventDefault();
  const offer = state.offer;
  if (!offer) return;
  if (!$("terms").checked) {
    termsError("Please tick “I agree to the terms” to accept.");
    $("terms").focus();
    return;
  }
  termsError("");
  showError("");
  setOfferBusy(true);
  try {
    await state.conn.request({
      type: "offer.accept",
      request_id: offer.request_id,
      terms_version: TERMS_VERSION,
    });
  } catch (err) {
    offerError(err);
  } finally {
    setOfferBusy(false);
  }
}

async function onDecline() {
  const offer = state.offer;
  if (!offer) return;
  showError("");
  setOfferBusy(true);
  try {
    await state.conn.request({ type: "offer.decline", request_id: offer.request_id });
  } catch (err) {
    offerError(err);
  } finally {
    setOfferBusy(false);
  }
}

function setOfferBusy(busy) {
  $("accept-offer").disabled = busy;
  $("decline-offer").disabled = busy;
}

function offerError(err) {
  if (isOffline(err)) {
    showError("Lost the connection to the service. Reconnecting; please try again in a moment.");
  } else if (err.code === "taken" || err.code === "not_found") {
    showError("This offer is no longer open.");
    // request.state will say what happened; ask in case it does not come.
    refreshRequest();
  } else showError(err.message || "Something went wrong. Please try again.");
}

async function refreshRequest() {
  const r = state.request || (state.offer && { id: state.offer.request_id });
  if (!r) return;
  const seq = state.stateSeq;
  const res = await api("GET", `/v1/requests/${encodeURIComponent(r.id)}`);
  if (res.status === 200 && res.body && res.body.request) applyHttpRequest(res.body.request, seq);
}

/** Apply R read over HTTP unless a request.state frame came since the call was made. */
function applyHttpRequest(r, seqAtCall) {
  if (state.stateSeq !== seqAtCall) return;
  applyRequest(r);
}

// --------------------------------------------------------------- requests

function onRequestState(frame) {
  state.heardSince = true;
  state.stateSeq += 1;
  if (frame && frame.request) applyRequest(frame.request);
}

function applyRequest(r) {
  // A frame about an older request (e.g. a late answer) never undoes a newer one.
  if (state.request && state.request.id !== r.id && !isFinal(state.request) && isFinal(r)) return;
  if (state.session) {
    if (r.id === state.session.request_id) {
      // The request of the current (or last) call: the call's frames tell the rest.
      state.request = r;
      remember();
      return;
    }
    if (!state.ended) return; // in a call: nothing else to show
    state.session = null; // a new request after a call
  }
  const previousView = state.view;
  state.request = r;
  remember();
  switch (r.state) {
    case "waiting":
      state.offer = null;
      stopOfferTick();
      showWaiting(r, previousView);
      break;
    case "claimed":
      if (state.offer && state.offer.request_id === r.id) break; // card already shown
      showWaiting(r, previousView);
      break;
    case "matched":
      stopOfferTick();
      if (!state.session) showWaiting(r, previousView);
      break;
    case "cancelled":
      stopOfferTick();
      showEnd(END_MESSAGES.cancelled);
      break;
    case "expired": // reason no_therapist or client_no_response
      stopOfferTick();
      showEnd(END_MESSAGES[r.reason] || END_MESSAGES.no_therapist);
      break;
    default:
      break;
  }
}

// ------------------------------------------------------------------- call

const CALL_STATUS = {
  starting: "Starting your camera and microphone…",
  joining: "Joining the call…",
  waiting: "Waiting for your therapist to join…",
  connecting: "Connecting the video…",
  connected: "You are connected.",
  reconnecting: "The connection dropped. Reconnecting…",
};

function onCallEvent(event, detail) {
  if (event === "state" && CALL_STATUS[detail.state]) {
    $("call-status").textContent = detail.offline
      ? "Lost the connection to the service. Reconnecting…"
      : CALL_STATUS[detail.state];
    if (detail.state === "connected") announce("You are connected with your therapist.");
    if (detail.state === "reconnecting") announce("The call connection dropped. Reconnecting.");
  } else if (event === "media") {
    const note = $("call-media");
    note.textContent = detail.message || "";
    note.hidden = !detail.message;
  } else if (event === "autoplay") {
    $("unmute").hidden = !detail.blocked;
  } else if (event === "live") {
    startLiveMeter(detail.startedAt);
  } else if (event === "peer_joined") {
    announce(detail.rejoin ? "Your therapist is back." : "Your therapist is joining the call.");
  } else if (event === "ended" && !state.ended && state.session) {
    // The session ended while we were away (the Call found out on rejoin).
    if (!detail.reason) settleSession(state.session.id);
  }
}

async function onSessionReady(frame) {
  state.heardSince = true;
  const s = frame && frame.session;
  if (!s) return;
  if (state.session && state.session.id === s.id) {
    state.session = { ...state.session, ...s };
    // The page asked to end while offline: end it now.
    if (state.endRequested) endSession();
    // Otherwise a reconnect: the Call joins again by itself.
    return;
  }
  state.session = s;
  state.ended = false;
  state.endRequested = false;
  state.offer = null;
  stopOfferTick();
  remember();
  $("chat-log").replaceChildren();
  state.shownMessages.clear();
  stopFunds();
  $("call-media").hidden = true;
  $("unmute").hidden = true;
  $("call-status").textContent = CALL_STATUS.starting;
  const known = state.therapist && state.therapist.id === s.therapist_id;
  $("call-peer").textContent = known ? state.therapist.name : "your therapist";
  show("call");
  announce(`Starting your call${known ? ` with ${state.therapist.name}` : ""}.`);
  state.call = new Call({
    conn: state.conn,
    session: s,
    selfId: state.me,
    role: "client",
    localVideo: $("local-video"),
    remoteVideo: $("remote-video"),
    onState: onCallEvent,
    controls: { root: $("call-controls"), lost: $("connection-lost") },
  });
  if (s.state === "live" && s.started_at) startLiveMeter(s.started_at);
  else meterWaiting();
  state.call.start().catch(() => {
    $("call-status").textContent = "Could not start the video call. Chat still works.";
  });
  if (!known) {
    const res = await api("GET", `/v1/therapists/${encodeURIComponent(s.therapist_id)}`);
    if (res.status === 200 && res.body && state.session && state.session.id === s.id) {
      state.therapist = res.body;
      remember();
      $("call-peer").textContent = res.body.name || "your therapist";
    }
  }
  loadTranscript(s.id);
}

async function loadTranscript(sessionId) {
  const res = await api("GET", `/v1/sessions/${encodeURIComponent(sessionId)}/transcript`);
  if (res.status !== 200 || !res.body || !Array.isArray(res.body.messages)) return;
  if (!state.session || state.session.id !== sessionId) return;
  for (const m of res.body.messages) addChat(m);
}

function onLive(frame) {
  if (!state.session || frame.session_id !== state.session.id) return;
  state.session = { ...state.session, state: "live", started_at: frame.started_at };
  startLiveMeter(frame.started_at);
}

async function startLiveMeter(startedAt) {
  const session = state.session;
  if (!session || state.ended || !startedAt) return;
  await state.walletReady; // the price, after a reload straight into the call
  if (state.session?.id !== session.id || state.ended) return;
  const w = currentWallet();
  startMeter(startedAt, w?.price_per_minute_minor, w?.currency);
}

function onFundsLow(frame) {
  if (!state.session || frame.session_id !== state.session.id || state.ended) return;
  const secondsLeft = typeof frame.seconds_left === "number" ? frame.seconds_left : 60;
  state.fundsEnd = Date.now() + secondsLeft * 1000;
  renderFunds();
  $("funds-low").hidden = false;
  if (!state.fundsTimer) state.fundsTimer = window.setInterval(renderFunds, 1000);
}

function renderFunds() {
  const left = Math.max(0, Math.round((state.fundsEnd - Date.now()) / 1000));
  $("funds-low").textContent =
    `Your credit is running out: the call will end in about ${spokenDuration(left)} ` +
    "unless you top up your wallet.";
}

function stopFunds() {
  if (state.fundsTimer) window.clearInterval(state.fundsTimer);
  state.fundsTimer = 0;
  $("funds-low").hidden = true;
}

function pendingLine(clientMsgId) {
  for (const li of $("chat-log").children) {
    if (li.dataset.clientMsgId === clientMsgId) return li;
  }
  return null;
}

/** Show a chat message (once, by its server id), in the order the server stored them. */
function addChat(m, { pending = false } = {}) {
  const log = $("chat-log");
  if (m.id && state.shownMessages.has(m.id)) return;
  // The stored message replaces its "sending…" line.
  if (m.client_msg_id && !pending) pendingLine(m.client_msg_id)?.remove();
  if (m.id) state.shownMessages.add(m.id);
  const mine = m.from === state.me;
  const li = document.createElement("li");
  li.className = `qc-msg ${mine ? "qc-msg-mine" : "qc-msg-theirs"}`;
  if (pending) li.classList.add("qc-msg-pending");
  li.dataset.testid = "chat-message";
  li.dataset.from = mine ? "me" : "peer";
  if (pending) li.dataset.clientMsgId = m.client_msg_id;
  const who = document.createElement("span");
  who.className = "qc-msg-who";
  who.textContent = mine ? "You" : (state.therapist && state.therapist.name) || "Therapist";
  const text = document.createElement("span");
  text.className = "qc-msg-text";
  text.textContent = m.text;
  const time = document.createElement("time");
  time.className = "qc-msg-time";
  if (pending) time.textContent = "sending…";
  else if (m.sent_at) {
    li.dataset.sentAt = m.sent_at;
    time.dateTime = m.sent_at;
    time.textContent = new Date(m.sent_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  li.append(who, text, time);
  let before = null;
  if (!pending && m.sent_at) {
    before = [...log.children].find(
      (x) => x.classList.contains("qc-msg-pending") || (x.dataset.sentAt && x.dataset.sentAt > m.sent_at),
    );
  }
  log.insertBefore(li, before || null);
  log.scrollTop = log.scrollHeight;
}

function onChatMessage(frame) {
  if (!state.session || frame.session_id !== state.session.id) return;
  if (frame.client_msg_id) state.pendingChat.delete(frame.client_msg_id);
  addChat(frame);
}

function sendChat(clientMsgId, text) {
  state.conn
    .request({ type: "chat.send", session_id: state.session.id, text, client_msg_id: clientMsgId })
    .catch((err) => {
      if (isOffline(err)) return; // sent again after the reconnect
      state.pendingChat.delete(clientMsgId);
      const time = pendingLine(clientMsgId)?.querySelector("time");
      if (time) time.textContent = "not sent";
      showError(
        err.code === "not_found"
          ? "The call has ended; the message was not sent."
          : `The message was not sent: ${err.message || err.code}`,
      );
    });
}

function onChatSubmit(event) {
  event.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text || !state.session || state.ended) return;
  const clientMsgId = newId("m");
  state.pendingChat.set(clientMsgId, text);
  addChat({ from: state.me, text, client_msg_id: clientMsgId }, { pending: true });
  input.value = "";
  input.focus();
  sendChat(clientMsgId, text);
}

/** Send session.end; when offline, again as soon as the connection is back. */
async function endSession() {
  if (!state.session || state.ended) return;
  state.endRequested = true;
  $("end-call").disabled = true;
  $("call-status").textContent = "Ending the call…";
  try {
    const answer = await state.conn.request({ type: "session.end", session_id: state.session.id });
    if (answer && answer.type === "session.ended") onSessionEnded(answer);
  } catch (err) {
    if (isOffline(err)) {
      $("call-status").textContent = "Lost the connection; the call ends as soon as it is back.";
    } else {
      showError(err.message || "Could not end the call.");
    }
  } finally {
    $("end-call").disabled = false;
  }
}

function onSessionEnded(frame) {
  if (!state.session || frame.session_id !== state.session.id || state.ended) return;
  state.ended = true;
  state.endRequested = false;
  finishCall();
  // In words, never the raw code; the facts below say how long and what it cost.
  const words = END_MESSAGES[frame.reason] || describeEndReason(frame.reason, "client");
  showEnd(words, "The call has ended");
  const sessionId = state.session.id;
  // A call that went live may be rated (PROTOCOL.md §10; feedback.js).
  if (frame.duration_s > 0) endFeedback?.show(sessionId);
  showEndFacts(sessionId, frame.duration_s).finally(() => refreshHistory());
}

function finishCall() {
  stopFunds();
  stopMeter();
  state.pendingChat.clear();
  if (state.call) state.call.close();
  state.call = null;
}

// -------------------------------------------------------------------- end

function showEnd(message, title = "Your request has ended") {
  state.offer = null;
  stopOfferTick();
  $("end-title").textContent = title;
  $("end-message").textContent = message;
  $("end-facts").hidden = true;
  $("end-topup").hidden = true;
  endFeedback?.hide();
  show("end");
  announce(message);
  remember();
}

/** Back to the form (after an end, or when there is nothing to resume). */
function startAgain({ focus = true } = {}) {
  state.request = null;
  state.session = null;
  state.offer = null;
  state.therapist = null;
  state.ended = false;
  showError("");
  remember();
  show("form", { focus });
  loadBalance();
}

function loadBalance() {
  state.walletReady = loadWallet();
  return state.walletReady;
}

// --------------------------------------------------------------- reconnect

function onOpen({ reconnected }) {
  showError("");
  state.heardSince = false;
  window.clearTimeout(state.resumeTimer);
  const first = !reconnected;
  state.resumeTimer = window.setTimeout(() => reconcile(first), RESUME_WAIT_MS);
  if (!first) {
    announce("Reconnected.");
    // Messages typed while the connection was down.
    if (state.session && !state.ended) {
      for (const [id, text] of state.pendingChat) sendChat(id, text);
    }
  }
}

/** After a (re)connect that brought no resume frame: find out what became of our request or call. */
async function reconcile(first) {
  if (state.heardSince) return;
  if (first) {
    const { requestId, sessionId } = recalled();
    if (sessionId) await settleSession(sessionId);
    else if (requestId) await settleRequest(requestId, true);
    if (!state.view) startAgain({ focus: false });
    return;
  }
  if (state.session && !state.ended) await settleSession(state.session.id);
  else if (state.request && !isFinal(state.request)) await settleRequest(state.request.id, false);
}

async function settleRequest(id, afterReload) {
  const seq = state.stateSeq;
  const res = await api("GET", `/v1/requests/${encodeURIComponent(id)}`);
  if (state.heardSince || state.stateSeq !== seq) return; // the server spoke meanwhile
  if (res.status !== 200 || !res.body || !res.body.request) {
    if (afterReload) startAgain({ focus: false });
    return;
  }
  const r = res.body.request;
  if (afterReload && r.state === "matched") {
    startAgain({ focus: false }); // its session is over (no session.ready came)
    return;
  }
  applyRequest(r);
}

async function settleSession(id) {
  const res = await api("GET", "/v1/sessions?limit=20");
  const s =
    res.status === 200 && res.body && Array.isArray(res.body.sessions)
      ? res.body.sessions.find((x) => x.id === id)
      : null;
  if (s && s.state === "ended") {
    if (!state.session) state.session = s;
    onSessionEnded({ session_id: id, reason: s.end_reason, duration_s: s.duration_s });
  } else if (!state.view) startAgain({ focus: false });
}

// -------------------------------------------------------------------- boot

/** "Your bookings" and joining a booked call (talkbookings.js). */
let talkBookings = null;
/** The feedback prompt on the end screen (feedback.js). */
let endFeedback = null;

function wire() {
  $("talk-form").addEventListener("submit", onTalkNow);
  $("age").addEventListener("input", updateGuardian);
  $("notes").addEventListener("input", updateCounter);
  $("cancel-request").addEventListener("click", onCancel);
  $("offer-form").addEventListener("submit", onAccept);
  $("decline-offer").addEventListener("click", onDecline);
  $("terms").addEventListener("change", () => {
    if ($("terms").checked) termsError("");
  });
  $("chat-form").addEventListener("submit", onChatSubmit);
  $("end-call").addEventListener("click", endSession);
  $("unmute").addEventListener("click", () => {
    state.call?.unmuteRemote();
    $("unmute").hidden = true;
  });
  $("start-again").addEventListener("click", () => startAgain());
  $("end-topup").addEventListener("click", () => {
    startAgain({ focus: false });
    state.walletReady.then(() => openTopup({ focus: true }));
  });
  initWallet({ api, announce });
  initHistory({ api, me: state.me, currency: () => state.walletReady?.then((w) => w?.currency) });
  initMeter({ el: $("call-meter"), note: $("call-meter-note") });
  endFeedback = initEndFeedback({ root: $("end-feedback"), api, announce });
  state.draft = keepDraft($("talk-form"));
  state.draft.restore();
  $("sign-out").addEventListener("click", () => {
    if (state.conn) state.conn.close();
    signOut();
  });
  updateCounter();
  updateGuardian();
}

function boot() {
  const signed = signIn({ role: "client" });
  if (!signed) return;
  state.token = signed.token;
  state.me = signed.claims.sub;
  $("who").textContent = signed.claims.name || signed.claims.sub;
  wire();
  loadBalance(); // the price and the balance, for the form, the offer and the call
  handleTopupReturn();
  // A therapist's share link opened before signing in (/r/<code>): link it once.
  linkStoredCode({
    token: () => state.token,
    show: (text, isError) => {
      const box = $("referral-result");
      box.textContent = text;
      box.className = `qc-alert ${isError ? "qc-alert-error" : "qc-alert-info"}`;
      box.hidden = false;
      announce(text);
    },
  });

  const { requestId, sessionId } = recalled();
  if (!requestId && !sessionId) {
    show("form", { focus: false });
  } else {
    // Back after a reload: the server resends the request or call after `welcome`.
    // If it cannot be reached at all, show the form rather than nothing.
    window.setTimeout(() => {
      if (!state.view) startAgain({ focus: false });
    }, 8000);
  }

  const conn = new Connection({ token: state.token });
  state.conn = conn;
  keepToken(conn, (token) => {
    state.token = token; // this page's own HTTP calls use it from now on
  });
  conn.on("open", onOpen);
  conn.on("request.state", onRequestState);
  conn.on("request.offer", onOffer);
  conn.on("session.ready", onSessionReady);
  conn.on("session.live", onLive);
  conn.on("session.funds_low", onFundsLow);
  conn.on("chat.message", onChatMessage);
  conn.on("session.ended", onSessionEnded);
  conn.on("state", ({ state: connState }) => setConn(connState));
  setConn(conn.state);
  conn.on("close", ({ willReconnect }) => {
    if (willReconnect) announce("Connection lost. Reconnecting…");
  });
  conn.on("signedout", () => {
    forgetToken();
    finishCall();
    showSignedOut("Your sign-in is no longer valid. Please sign in again.");
  });

  talkBookings = initTalkBookings({
    token: () => state.token,
    conn,
    currency: () => state.walletReady?.then((w) => w?.currency),
    announce,
    onSession: (session) => onSessionReady({ session }),
  });
  talkBookings.show(state.view === "form" || state.view === "end");
  initMyData(conn); // "Download my data" (PROTOCOL.md §10)
  window.qcConn = conn;
  window.qcTalk = { state, END_MESSAGES };
}

boot();
