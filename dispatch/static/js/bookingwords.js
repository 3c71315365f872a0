// bookingwords.js — what a booking (PROTOCOL.md §8, object B) means, in words
// and numbers, for every booking page (an ES module, no build step, no DOM).
//
// API
//   stateWords(state, b?) -> "Booked", "Cancelled late, with a fee", ... (b: its fee_minor)
//   typeWords(type) -> "Free introduction" | "Session"
//   lateFeeMinor(b) -> what a late cancel or a no-show costs the client (minor units)
//   isLate(b, nowMs?) -> a cancel by the client now falls inside the window (so a fee)
//   joinOpen(b, nowMs?) -> the call may be opened: scheduled (or occurred: rejoined), from 10
//     minutes before the start to its end
//   outcomeOpen(b, nowMs?) -> scheduled and started: occurred / no-show may be marked
//   policyLines(policy, priceMinor, money) -> the cancellation terms as sentences
//     (money(minor) formats an amount); an intro (price 0) costs nothing
//   cancelWords(b, role, money, nowMs?) -> what cancelling now does, said before it is done
//   bookingError(err, role?) -> a refused booking call in words (slot_taken, too_soon, ...);
//     role "therapist" / "operator": `intake_required` is about the client's forms
//   DEFAULT_POLICY -> the protocol's defaults, used only when the server says nothing

export const JOIN_EARLY_MS = 10 * 60 * 1000;

export const DEFAULT_POLICY = { cancel_window_h: 24, late_fee_pct: 100, late_fee_therapist_pct: 50 };

const STATES = {
  scheduled: "Booked",
  occurred: "Took place",
  cancelled: "Cancelled",
  late_cancelled: "Cancelled late, with a fee",
  no_show: "Missed (no-show)",
  therapist_cancelled: "Cancelled by the therapist or the service",
};

export function stateWords(state, b = null) {
  // A late cancel or a no-show of a free intro charges nothing: say so.
  if (b && Number(b.fee_minor) === 0 && (state === "late_cancelled" || state === "no_show")) {
    return state === "no_show" ? "Missed (no-show), no fee" : "Cancelled late, no fee";
  }
  return STATES[state] || "Unknown state";
}

export function typeWords(type) {
  return type === "intro" ? "Free introduction" : "Session";
}

function ms(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

function policyOf(b) {
  return { ...DEFAULT_POLICY, ...(b && b.policy ? b.policy : {}) };
}

export function lateFeeMinor(b) {
  const price = Number(b.price_minor) || 0;
  return Math.floor((price * policyOf(b).late_fee_pct) / 100);
}

export function isLate(b, nowMs = Date.now()) {
  const start = ms(b.start);
  return start !== null && nowMs > start - policyOf(b).cancel_window_h * 3600 * 1000;
}

export function joinOpen(b, nowMs = Date.now()) {
  const start = ms(b.start);
  const end = ms(b.end);
  const live = b.state === "scheduled" || b.state === "occurred"; // an occurred call may be rejoined till its end
  return live && start !== null && end !== null && nowMs >= start - JOIN_EARLY_MS && nowMs <= end;
}

export function outcomeOpen(b, nowMs = Date.now()) {
  const start = ms(b.start);
  return b.state === "scheduled" && start !== null && nowMs >= start;
}

function hours(h) {
  return h === 1 ? "1 hour" : `${h} hours`;
}

export function policyLines(policy, priceMinor, money) {
  const p = { ...DEFAULT_POLICY, ...(policy || {}) };
  const price = Number(priceMinor) || 0;
  if (price <= 0) {
    return ["This introduction is free. Cancelling it costs nothing, whenever you do it."];
  }
  const fee = Math.floor((price * p.late_fee_pct) / 100);
  const lines = [
    `Booking holds ${money(price)} in your wallet for each session; it is charged when the session takes place.`,
    `Cancel at least ${hours(p.cancel_window_h)} before the start and nothing is charged: the hold is released.`,
  ];
  lines.push(
    fee > 0
      ? `Cancel later than that, or miss the session, and ${money(fee)} is charged (${p.late_fee_pct}% of the price).`
      : "Cancelling late or missing the session costs nothing.",
  );
  lines.push("If the therapist cancels, you are never charged.");
  return lines;
}

export function cancelWords(b, role, money, nowMs = Date.now()) {
  if (role !== "client") return "The client is not charged when you cancel.";
  const fee = lateFeeMinor(b);
  if (!isLate(b, nowMs) || fee <= 0) return "Cancelling now costs you nothing.";
  const h = policyOf(b).cancel_window_h;
  return `It is less than ${hours(h)} before the start: cancelling now costs ${money(fee)}.`;
}

const ERRORS = {
  slot_taken: "That time has just been taken. Choose another one.",
  outside_availability: "That time is outside the therapist's hours. Choose another one.",
  too_soon: "That time is too soon to book. Choose a later one.",
  intro_used: "You have already had your free introduction with this therapist. Book a session instead.",
  intake_required: "Please fill in your forms before booking a session.",
  paused: "This therapist is not taking new clients right now.",
  insufficient_funds: "Your wallet does not hold enough for this booking. Top up, then try again.",
  too_early: "It is too early for that.",
  conflict: "That booking has changed meanwhile. The list is reloaded.",
  forbidden: "You may not do that.",
  not_found: "That was not found.",
};

export function bookingError(err, role = "client") {
  if (err && err.code === "network") return "The server could not be reached. Try again.";
  if (err && err.code === "intake_required" && role !== "client") {
    return "This client has not filled in their forms yet: they do that on their “Your forms” page before a session can be booked.";
  }
  return (err && ERRORS[err.code]) || `The service refused it: ${(err && err.message) || "unknown error"}`;
}
