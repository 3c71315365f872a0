// wallet.js — the client's wallet on /talk (an ES module, no build step).
//
// What it shows (talk.html's #wallet, #topup and the end view's facts):
// - the price and the balance before "talk now": "£1.50 a minute · your
//   balance £12.00 (about 8 minutes)", and when the balance is below the
//   minimum to start, why, with the top-up picker open;
// - the top-up picker: preset amounts and one of the client's own within the
//   limits; "Pay" asks `POST /v1/wallet/checkout` and goes to its `url`
//   (Stripe Checkout, or with --dev the server's own test payment page), which
//   comes back to `/talk?topup=done&checkout_id=…` or `/talk?topup=cancelled`;
// - back here, what became of it: `GET /v1/wallet/checkout/{id}`, asked for a
//   while since the payment's webhook may lag ("arrived", "still processing…");
// - after a call, what it cost and what is left: `amount_minor` of the session
//   in `GET /v1/sessions` (written as the session ends, so asked a few times)
//   and `GET /v1/wallet`, with a "Top up" when the rest is below the minimum.
//
// API
//   initWallet({api, announce})   api(method, path, body?) -> {status, body}
//                                 (talk.js's); announce(text) speaks.
//   loadWallet() -> Promise<wallet | null>   GET /v1/wallet, shown.
//   currentWallet() -> the last wallet read (null before).
//   pricePerMinute() -> e.g. "£1.50 a minute" ("" when unknown).
//   openTopup({message, focus})   shows the picker (after a 402, from the end).
//   handleTopupReturn()           reads ?topup= from the address bar (once, at boot).
//   showEndFacts(sessionId, durationS) -> Promise   the end view's facts.
//
// Test hooks (data-testid): wallet-line, wallet-short, topup-open, topup-form,
// topup-amount (data-amount), topup-custom-choice, topup-custom, topup-pay,
// topup-error, topup-result (data-state), end-facts, end-duration,
// end-charge, end-balance, end-topup.

import { formatDuration } from "./protocol.js";
import { minutesFor, spokenMinutes } from "./amounts.js";
import { formatMoney, parseAmount } from "./money.js";

const $ = (id) => document.getElementById(id);

const PRESETS_MINOR = [1000, 2000, 5000];
const DEFAULT_LIMITS = { min: 500, max: 50000 };
const PENDING_KEY = "qc.talk.topup";
/** How long to follow a checkout after coming back, and when to say "still processing". */
const FOLLOW_MS = 120_000;
const PROCESSING_AFTER_MS = 5_000;
/** How often the end view asks for the session's charge. */
const CHARGE_DELAYS_MS = [300, 700, 1000, 1500, 2000, 3000, 4000];

let api = null;
let announce = () => {};
let wallet = null;
let picked = null; // the chosen preset amount, or "custom"

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function currentWallet() {
  return wallet;
}

function money(minor) {
  return formatMoney(minor, wallet?.currency);
}

export function pricePerMinute() {
  const price = wallet?.price_per_minute_minor;
  return typeof price === "number" && price > 0 ? `${money(price)} a minute` : "";
}

function limits() {
  const min = wallet?.topup_min_minor;
  const max = wallet?.topup_max_minor;
  return {
    min: typeof min === "number" ? min : DEFAULT_LIMITS.min,
    max: typeof max === "number" ? max : DEFAULT_LIMITS.max,
  };
}

/** What is missing to reach the minimum to start (0 when enough or unknown). */
function shortBy(w = wallet) {
  if (!w || typeof w.min_balance_minor !== "number") return 0;
  return Math.max(0, w.min_balance_minor - (w.balance_minor || 0));
}

const paymentsOff = () => wallet?.payments === "off";

// ------------------------------------------------------------- the line

export async function loadWallet() {
  const res = await api("GET", "/v1/wallet");
  if (res.status !== 200 || !res.body || typeof res.body.balance_minor !== "number") {
    $("wallet-line").textContent = "Your balance could not be loaded just now.";
    return null;
  }
  wallet = res.body;
  render();
  return wallet;
}

function render() {
  const w = wallet;
  const price = w.price_per_minute_minor;
  const balance = money(w.balance_minor);
  const minutes = minutesFor(w.balance_minor, price);
  $("wallet-line").textContent =
    minutes === null
      ? `Your balance: ${balance}`
      : `${pricePerMinute()} · your balance ${balance} (about ${spokenMinutes(minutes)})`;
  const short = shortBy();
  const note = $("wallet-short");
  if (short > 0) {
    const mins = minutesFor(w.min_balance_minor, price);
    note.textContent =
      `To start a session you need at least ${money(w.min_balance_minor)} in your wallet` +
      (mins ? ` (${spokenMinutes(mins)})` : "") +
      (paymentsOff() ? ". Topping up is not available right now." : ". Top up to talk now.");
    note.hidden = false;
  } else note.hidden = true;
  $("topup-open").hidden = paymentsOff();
  $("topup-test-note").hidden = w.payments !== "test";
  renderPresets();
  if (short > 0 && !paymentsOff()) openTopup({ focus: false });
  else if (paymentsOff()) closeTopup();
}

// ----------------------------------------------------------- the picker

function renderPresets() {
  const { min, max } = limits();
  const need = shortBy();
  const amounts = new Set(PRESETS_MINOR.filter((a) => a >= min && a <= max));
  // Enough to start, rounded up to a whole unit of money (£13.50 -> £14.00).
  const enough = Math.max(min, Math.ceil(need / 100) * 100);
  if (need > 0 && enough <= max) amounts.add(enough);
  const sorted = [...amounts].sort((a, b) => a - b);
  if (picked !== "custom" && !sorted.includes(picked)) {
    picked = sorted.find((a) => a >= need && a >= 2000) ?? sorted.find((a) => a >= need) ?? sorted[0];
  }
  const box = $("topup-presets");
  const key = sorted.join(",");
  // Rebuilt only when the amounts change: a rebuild drops the focus (given back).
  const rebuild = box.dataset.amounts !== key;
  const hadFocus = rebuild && box.contains(document.activeElement);
  if (rebuild) {
    box.dataset.amounts = key;
    box.replaceChildren(...sorted.map(presetChip));
  }
  for (const input of box.querySelectorAll("input")) input.checked = Number(input.value) === picked;
  if (hadFocus) box.querySelector("input:checked, input")?.focus();
  $("topup-custom-choice").checked = picked === "custom";
  $("topup-limits").textContent = `From ${money(min)} to ${money(max)}.`;
  renderChoice();
}

function presetChip(amount) {
  const label = document.createElement("label");
  label.className = "qc-chip";
  const input = document.createElement("input");
  input.type = "radio";
  input.name = "topup-amount";
  input.value = String(amount);
  input.dataset.testid = "topup-amount";
  input.dataset.amount = String(amount);
  label.append(input, ` ${money(amount)}`);
  return label;
}

/** The custom amount typed, in minor units; null while it is not one. */
function typedAmount() {
  return parseAmount($("topup-custom").value, wallet?.currency || "GBP").minor ?? null;
}

function renderChoice() {
  const custom = picked === "custom";
  $("topup-custom-field").hidden = !custom;
  const amount = custom ? typedAmount() : picked;
  $("topup-pay").textContent = amount ? `Pay ${money(amount)}` : "Pay";
}

function onPick(event) {
  const input = event.target;
  if (!input || input.name !== "topup-amount") return;
  picked = input.value === "custom" ? "custom" : Number(input.value);
  topupError("");
  renderChoice();
  if (picked === "custom") $("topup-custom").focus();
}

function topupError(text) {
  const p = $("topup-error");
  p.textContent = text;
  p.hidden = !text;
  const input = $("topup-custom");
  if (text && picked === "custom") input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

/** Show the picker; `message` (e.g. after a 402) goes in the short note. */
export function openTopup({ message = "", focus = true } = {}) {
  if (message) {
    $("wallet-short").textContent = message;
    $("wallet-short").hidden = false;
  }
  if (paymentsOff()) return;
  $("topup").hidden = false;
  $("topup-open").setAttribute("aria-expanded", "true");
  if (focus) {
    const first =
      document.querySelector('#topup input[name="topup-amount"]:checked') ||
      document.querySelector('#topup input[name="topup-amount"]');
    first?.focus();
  }
}

function closeTopup() {
  $("topup").hidden = true;
  $("topup-open").setAttribute("aria-expanded", "false");
  topupError("");
}

async function onPay(event) {
  event.preventDefault();
  const { min, max } = limits();
  let amount = picked;
  if (picked === "custom") {
    const typed = parseAmount($("topup-custom").value, wallet?.currency || "GBP");
    amount = typed.minor ?? null;
    if (amount === null) {
      topupError(`${typed.error} From ${money(min)} to ${money(max)}.`);
      $("topup-custom").focus();
      return;
    }
  }
  if (!amount || amount < min || amount > max) {
    topupError(`Choose an amount from ${money(min)} to ${money(max)}.`);
    return;
  }
  topupError("");
  const button = $("topup-pay");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const res = await api("POST", "/v1/wallet/checkout", { amount_minor: amount });
    const err = res.body?.error || {};
    if (res.status === 200 && res.body?.url) {
      try {
        sessionStorage.setItem(
          PENDING_KEY,
          JSON.stringify({ checkout_id: res.body.checkout_id, amount_minor: amount }),
        );
      } catch {
        // storage disabled: the page asks the checkout by the id in its address
      }
      announce("Going to the payment page.");
      window.location.assign(res.body.url);
      return;
    }
    if (res.status === 503 || err.code === "payments_off") {
      topupError("Topping up is not available right now. Please try again later.");
    } else if (res.status === 422) {
      topupError(`Choose an amount from ${money(min)} to ${money(max)}.`);
    } else if (res.status === 404 || res.status === 405) {
      topupError("Topping up is not available on this service yet.");
    } else if (res.status === 0) {
      topupError("Could not reach the service. Check your connection and try again.");
    } else {
      topupError(err.message ? `The payment could not start: ${err.message}` : "The payment could not start. Please try again.");
    }
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// ------------------------------------------------- back from the payment

function result(kind, text) {
  const box = $("topup-result");
  box.className = `qc-alert qc-alert-${kind}`;
  box.dataset.state = kind;
  box.textContent = text;
  box.hidden = !text;
  if (text) announce(text);
}

function pendingTopup() {
  try {
    const kept = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null") || {};
    sessionStorage.removeItem(PENDING_KEY);
    return kept;
  } catch {
    return {};
  }
}

/** `?topup=done&checkout_id=…` or `?topup=cancelled`: say what became of it. */
export function handleTopupReturn() {
  const params = new URLSearchParams(window.location.search);
  const outcome = params.get("topup");
  if (!outcome) return;
  const kept = pendingTopup();
  const checkoutId = params.get("checkout_id") || kept.checkout_id || "";
  // A reload should not tell it again.
  try {
    window.history.replaceState(window.history.state, "", window.location.pathname + window.location.hash);
  } catch {
    // the address keeps its query; harmless
  }
  if (outcome === "cancelled") {
    result("info", "Your top-up was cancelled: nothing was charged.");
    return;
  }
  if (checkoutId) followCheckout(checkoutId, kept.amount_minor);
}

async function followCheckout(id, amountGuess) {
  const started = Date.now();
  let amount = amountGuess;
  let told = false;
  const what = () => (typeof amount === "number" ? `Your top-up of ${money(amount)}` : "Your top-up");
  result("info", `Checking ${what().replace(/^Your/, "your")}…`);
  for (let attempt = 0; ; attempt += 1) {
    const res = await api("GET", `/v1/wallet/checkout/${encodeURIComponent(id)}`);
    const c = res.status === 200 ? res.body : null;
    if (c && typeof c.amount_minor === "number") amount = c.amount_minor;
    if (c?.state === "paid") {
      await loadWallet();
      result("success", `${what()} arrived.`);
      return;
    }
    if (c?.state === "expired") {
      result("warn", `${what()} did not go through, so nothing was added to your wallet.`);
      return;
    }
    if (res.status === 404) {
      result("warn", "That payment could not be found. If you paid, your balance updates shortly.");
      return;
    }
    const waited = Date.now() - started;
    if (!told && waited >= PROCESSING_AFTER_MS) {
      told = true;
      result("info", `${what()} is still processing… Your balance updates as soon as it arrives.`);
    }
    if (waited >= FOLLOW_MS) {
      result("info", `${what()} is still processing… Reload this page in a minute to see your balance.`);
      return;
    }
    await sleep(attempt < 10 ? 1000 : 3000);
  }
}

// ------------------------------------------------------- after a call

function fact(id, text) {
  $(id).textContent = text;
}

/** The end view's duration, charge and balance (the charge is written as the session ends). */
export async function showEndFacts(sessionId, durationS) {
  $("end-facts").hidden = false;
  $("end-topup").hidden = true;
  fact("end-duration", typeof durationS === "number" ? formatDuration(durationS) : "Not known");
  fact("end-charge", "Working it out…");
  fact("end-balance", "…");
  let amount = null;
  let session = null;
  for (const delay of CHARGE_DELAYS_MS) {
    await sleep(delay);
    const res = await api("GET", "/v1/sessions?limit=10");
    session = res.body?.sessions?.find((s) => s.id === sessionId) || session;
    if (typeof session?.amount_minor === "number") {
      amount = session.amount_minor;
      break;
    }
  }
  if (typeof durationS !== "number" && typeof session?.duration_s === "number") {
    fact("end-duration", formatDuration(session.duration_s));
  }
  const w = await loadWallet();
  if (amount === null) fact("end-charge", "Not known yet: it will show in your transactions.");
  else fact("end-charge", amount === 0 ? "Nothing (the call never started)" : money(amount));
  fact("end-balance", w ? money(w.balance_minor) : "Not known");
  $("end-topup").hidden = !(w && shortBy(w) > 0 && !paymentsOff());
}

// -------------------------------------------------------------- wiring

export function initWallet(options) {
  api = options.api;
  announce = options.announce || announce;
  $("topup-open").addEventListener("click", () => {
    if ($("topup").hidden) openTopup();
    else closeTopup();
  });
  $("topup-cancel").addEventListener("click", () => {
    closeTopup();
    $("topup-open").focus();
  });
  $("topup").addEventListener("change", onPick);
  $("topup-custom").addEventListener("input", () => {
    topupError("");
    renderChoice();
  });
  $("topup").addEventListener("submit", onPay);
}
