// book.js — the booking page of one therapist, /book/{therapist_id}
// (PROTOCOL.md §8; a shareable address; an ES module, no build step).
//
// A client (or an operator, for a client whose id it types: `?client=` fills
// it) sees the therapist's public profile, chooses a free introduction or a
// session, one of the open times (slotpicker.js), optionally "repeat weekly
// for N weeks", reads the cancellation terms and what will be held in the
// wallet, then confirms: `POST /v1/bookings` with an Idempotency-Key (the same
// key for a retry after a network failure). Below: the person's bookings
// (mybookings.js) with cancel (the fee said first) and "Join the call", which
// opens the call on /talk (`/talk?join=<booking id>`). A client also sets the
// email its confirmations and reminders go to (contactemail.js). A session
// refused with `intake_required` (§10) links to /forms?next=<this page>,
// which comes back here once every form is done.
//
// Test hooks (data-testid): book-therapist, book-therapist-name, book-wallet,
// book-form, book-client-id, book-type-intro, book-type-session, book-repeat,
// book-weeks, book-policy, book-summary, book-confirm, book-result, book-forms-link,
// book-forms-note,
// booking-list; slotpicker.js's, bookinglist.js's and contactemail.js's.

import { forgetToken, signIn, signOut } from "./auth.js";
import { el, failureText } from "./dom.js";
import { httpRequest, newId } from "./protocol.js";
import { formatMoney } from "./money.js";
import { bookingError, DEFAULT_POLICY, policyLines } from "./bookingwords.js";
import { createSlotPicker } from "./slotpicker.js";
import { initMyBookings } from "./mybookings.js";
import { initContactEmail } from "./contactemail.js";
import { timeWords, whenWords } from "./when.js";

const $ = (id) => document.getElementById(id);
/** The protocol's default session price, used only when neither the slots nor the profile say. */
const DEFAULT_PRICE_MINOR = 6000;

const state = {
  token: "",
  role: "client",
  therapistId: "",
  profile: null,
  tz: "UTC",
  currency: "GBP",
  idemKey: "",
  busy: false,
  formsDone: true, // a client's §10 forms (GET /v1/me/forms); until known, no note
  formTitles: new Map(), // form name -> its title (GET /v1/forms)
};

const api = (method, path, body, options) => httpRequest(state.token, method, path, body, options);
const money = (minor) => formatMoney(minor, state.currency);

function announce(text) {
  const live = $("live");
  live.textContent = "";
  window.setTimeout(() => {
    live.textContent = text;
  }, 50);
}

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

function showResult(text, kind, extra = null) {
  const box = $("result");
  box.replaceChildren(text);
  if (extra) box.append(" ", extra);
  box.className = `qc-alert qc-alert-${kind}`;
  box.hidden = !text;
}

function type() {
  return document.querySelector('input[name="type"]:checked')?.value || "session";
}

function weeks() {
  if (type() !== "session" || !$("repeat").checked) return 1;
  const n = Number($("weeks").value);
  return Number.isInteger(n) ? n : NaN;
}

function price() {
  if (type() === "intro") return 0;
  const extras = picker.extras || {};
  if (typeof extras.price_minor === "number") return extras.price_minor;
  if (state.profile && typeof state.profile.session_price_minor === "number") return state.profile.session_price_minor;
  return DEFAULT_PRICE_MINOR;
}

function renderTerms() {
  const intro = type() === "intro";
  $("forms-note").hidden = intro || state.formsDone;
  $("repeat-field").hidden = intro;
  $("weeks-field").hidden = intro || !$("repeat").checked;
  const list = $("policy-lines");
  list.replaceChildren(...policyLines(picker.extras?.policy || DEFAULT_POLICY, price(), money).map((t) => el("li", { text: t })));
  const slot = picker.selected();
  const n = weeks();
  if (!slot) {
    $("summary").textContent = "Choose a time to see what you are booking.";
    return;
  }
  const when = `${whenWords(Date.parse(slot.start))}–${timeWords(Date.parse(slot.end))}`;
  const what = intro ? "A free introduction" : n > 1 ? `${n} weekly sessions, the first` : "A session";
  const held = intro ? "" : ` ${money(price() * (Number.isInteger(n) ? n : 1))} will be held in the wallet.`;
  $("summary").textContent = `${what} on ${when}.${held}`;
}

const picker = createSlotPicker({
  root: $("slots"),
  api,
  therapistId: () => state.therapistId,
  onChange: () => renderTerms(),
});

/** The open times of the chosen type; then its length and price in the type's words. */
async function loadSlots() {
  renderTerms();
  await picker.load(type(), state.tz);
  const extras = picker.extras || {};
  const minutes = typeof extras.length_min === "number" ? `, ${extras.length_min} minutes` : "";
  if (type() === "intro") $("type-intro-words").textContent = `A free introduction (one per therapist${minutes})`;
  else $("type-session-words").textContent = `A session, ${money(price())}${minutes}`;
  renderTerms();
}

function setWeeksError(text) {
  $("weeks-error").textContent = text;
  $("weeks-error").hidden = !text;
  if (text) $("weeks").setAttribute("aria-invalid", "true");
  else $("weeks").removeAttribute("aria-invalid");
}

async function confirm(event) {
  event.preventDefault();
  if (state.busy) return;
  showResult("", "info");
  setWeeksError("");
  const slot = picker.selected();
  const body = { therapist_id: state.therapistId, type: type() };
  if (state.role === "operator") {
    const client = $("client-id").value.trim();
    $("client-id-error").hidden = !!client;
    $("client-id-error").textContent = client ? "" : "Enter the client's id.";
    if (!client) {
      $("client-id").focus();
      return;
    }
    body.client_id = client;
  }
  if (!slot) {
    showResult("Choose one of the open times first.", "error");
    (document.querySelector("[data-testid=slot]") || $("result")).focus();
    return;
  }
  body.start = slot.start;
  const n = weeks();
  if (!(n >= 1 && n <= 12) || (n === 1 && $("repeat").checked && type() === "session")) {
    setWeeksError("Enter a whole number of weeks from 2 to 12.");
    $("weeks").focus();
    return;
  }
  if (n > 1) body.repeat_weekly = n;
  state.busy = true;
  $("confirm").setAttribute("aria-busy", "true");
  $("confirm").disabled = true;
  if (!state.idemKey) state.idemKey = newId("b");
  try {
    const data = await api("POST", "/v1/bookings", body, { headers: { "Idempotency-Key": state.idemKey } });
    state.idemKey = "";
    const made = (data && data.bookings) || [];
    const first = made[0] ? whenWords(Date.parse(made[0].start)) : "";
    const words =
      made.length > 1
        ? `Booked: ${made.length} weekly sessions, the first on ${first}.`
        : `Booked for ${first}.`;
    const mailed = state.role === "client" && $("contact-email").value.trim();
    showResult(`${words}${mailed ? " A confirmation is on its way to your email." : ""}`, "success");
    announce(words);
    $("result").focus();
    reloadMine();
    loadSlots();
    loadWallet();
  } catch (err) {
    if (err.code !== "network") state.idemKey = "";
    let extra = null;
    let words = err.status ? bookingError(err) : failureText(err, "Nothing was booked");
    if (err.code === "insufficient_funds") extra = el("a", { href: "/talk", text: "Top up your wallet" });
    if (err.code === "intake_required") [words, extra] = intakeWords(err);
    showResult(words, "error", extra);
    $("result").focus();
    if (err.code === "slot_taken" || err.code === "too_soon") loadSlots();
  } finally {
    state.busy = false;
    $("confirm").disabled = false;
    $("confirm").removeAttribute("aria-busy");
  }
}

function formTitle(name) {
  return state.formTitles.get(name) || name;
}

/** A client whose forms are not all done sees a note beside "A session" (the server decides). */
async function loadFormsState() {
  try {
    const [mine, defs] = await Promise.all([api("GET", "/v1/me/forms"), api("GET", "/v1/forms")]);
    const agreements = new Set();
    for (const f of (defs && defs.forms) || []) {
      state.formTitles.set(f.name, f.title || f.name);
      if (f.consent === true) agreements.add(f.name);
    }
    state.formsDone = !!(mine && mine.complete);
    // Still to do: a form never filled in, or terms agreed to before they changed.
    const todo = ((mine && mine.forms) || [])
      .filter((f) => f.state === "missing" || (f.state === "outdated" && agreements.has(f.name)))
      .map((f) => formTitle(f.name));
    $("forms-note-which").textContent = todo.length ? ` (${todo.join(", ")})` : "";
  } catch {
    state.formsDone = true; // say nothing: the booking itself tells if forms are missing
  }
  $("forms-note-link").href = `/forms?next=${encodeURIComponent(`${location.pathname}${location.search}`)}`;
  renderTerms();
}

/** `intake_required` (§10): which forms are missing and, for the client, a link there and back. */
function intakeWords(err) {
  const missing = Array.isArray(err.detail && err.detail.forms) ? err.detail.forms.filter((f) => typeof f === "string") : [];
  const which = missing.length ? ` (still to do: ${missing.map(formTitle).join(", ")})` : "";
  if (state.role !== "client") {
    return [`This client has not filled in their forms yet${which}: they do that on their “Your forms” page before a session can be booked.`, null];
  }
  const back = `${location.pathname}${location.search}`;
  const link = el("a", {
    href: `/forms?next=${encodeURIComponent(back)}`,
    "data-testid": "book-forms-link",
    text: "Fill in your forms",
  });
  return [`Before your first session, please fill in your forms${which}. You come back here afterwards.`, link];
}

async function loadWallet() {
  if (state.role !== "client") return;
  try {
    const w = await api("GET", "/v1/wallet");
    if (typeof w.currency === "string") state.currency = w.currency;
    const held = Number(w.held_minor) || 0;
    const available = (Number(w.balance_minor) || 0) - held;
    $("wallet-line").textContent =
      `Your wallet: ${money(available)} to spend` + (held ? `, ${money(held)} held for your bookings.` : ".");
    $("wallet-line").hidden = false;
    renderTerms();
  } catch {
    // the server checks the funds anyway
  }
}

async function loadTherapist() {
  const id = state.therapistId;
  try {
    const p = await api("GET", `/v1/therapists/${encodeURIComponent(id)}`);
    state.profile = p;
    $("therapist-name").textContent = p.name || id;
    document.title = `Book with ${p.name || id} · Quick-connect`;
    $("therapist-bio").textContent = p.bio || "";
    $("therapist-topics").textContent = Array.isArray(p.topics) && p.topics.length ? `Works with: ${p.topics.join(", ")}` : "";
    if (p.photo_url) {
      $("therapist-photo").src = p.photo_url;
      $("therapist-photo").alt = `Photo of ${p.name || "the therapist"}`;
      $("therapist-photo").hidden = false;
    }
  } catch (err) {
    showError(err.status === 404 ? "There is no such therapist. Check the address." : failureText(err, "The therapist could not be loaded"));
    return false;
  }
  try {
    const av = await api("GET", `/v1/therapists/${encodeURIComponent(id)}/availability`);
    if (av && typeof av.timezone === "string") state.tz = av.timezone;
  } catch {
    if (state.profile && typeof state.profile.timezone === "string") state.tz = state.profile.timezone;
  }
  return true;
}

async function main() {
  const signed = signIn();
  if (!signed) return;
  state.token = signed.token;
  state.role = signed.claims.role;
  $("who").textContent = signed.claims.name || signed.claims.sub;
  $("sign-out").addEventListener("click", () => signOut());
  const m = /^\/book\/([^/]+)\/?$/.exec(location.pathname);
  state.therapistId = m ? decodeURIComponent(m[1]) : "";
  if (state.role === "therapist") {
    showError("This page is for clients and operators. Book follow-ups from your console, at the end of a call.");
    $("view-book").hidden = true;
    $("mine").hidden = true;
    return;
  }
  if (state.role === "operator") {
    $("client-field").hidden = false;
    $("client-id").value = new URLSearchParams(location.search).get("client") || "";
    $("talk-link").hidden = true;
    $("mine-title").textContent = "This client's bookings with this therapist";
  }
  if (!state.therapistId || !(await loadTherapist())) {
    $("view-book").hidden = true;
    return;
  }
  for (const input of document.querySelectorAll('input[name="type"]')) {
    input.addEventListener("change", () => loadSlots());
  }
  $("repeat").addEventListener("change", renderTerms);
  $("weeks").addEventListener("input", () => {
    setWeeksError("");
    renderTerms();
  });
  $("book-form").addEventListener("submit", confirm);
  if (state.role === "client") {
    loadContact();
    loadFormsState();
  }
  await loadWallet();
  await loadSlots();
  mine = initMyBookings({
    list: $("mine-list"),
    empty: $("mine-empty"),
    api,
    role: state.role,
    currency: () => state.currency,
    announce,
    keep: (b) =>
      state.role !== "operator" ||
      (b.therapist_id === state.therapistId && b.client_id === $("client-id").value.trim()),
    onJoin: async (b) => {
      location.assign(`/talk?join=${encodeURIComponent(b.id)}`);
    },
  });
  $("client-id").addEventListener("change", () => reloadMine());
  reloadMine();
}

/** A client's "Email for confirmations and reminders" (contactemail.js). */
function loadContact() {
  $("contact").hidden = false;
  const contact = initContactEmail({
    form: $("contact-form"),
    input: $("contact-email"),
    error: $("contact-error"),
    status: $("contact-status"),
    save: $("contact-save"),
    api,
  });
  contact.load().catch((err) => {
    if (err.status === 401) forgetToken();
    $("contact-error").textContent = failureText(err, "Your saved email could not be loaded");
    $("contact-error").hidden = false;
  });
}

/** The person's bookings (mybookings.js), created once the role is known. */
let mine = null;

function reloadMine() {
  if (!mine) return;
  mine.reload().catch((err) => {
    if (err.status === 401) forgetToken();
    $("mine-empty").textContent = failureText(err, "Your bookings could not be loaded");
    $("mine-empty").hidden = false;
  });
}

main();
