// money.js — money, dates and ledger words for the client's page and the
// console's call log and earnings sections (an ES module, no build step, no DOM: pure functions).
// Both pages write and read amounts with it (the client's minutes: amounts.js).
//
// API
//   minorDigits(currency) -> the digits of the currency's minor unit (GBP 2, JPY 0)
//   formatMoney(minor, currency, {signed}) -> "£12.50" ("+£0.90" / "-£10.00" when signed)
//   currencySymbol(currency) -> "£"
//   amountText(minor, currency) -> "12.50": what an amount field holds, no symbol
//   parseAmount(text, currency) -> {minor} | {error}: an amount typed by a person
//   firstName(name) -> "Sam" ("Sam Client" -> "Sam"; null or blank -> "A client")
//   formatWhen(iso) -> "Tue 3 Mar, 14:05" (with the year when not this year)
//   formatDay(isoOrDate) -> "Friday 18 December" (a calendar day; the year when not this year)
//   withdrawalWords(w) -> {state, payout}: a withdrawal's state and payout date in words
//   transactionWords(kind) -> "Earning from a session", "Withdrawal", ...
//
// Money is an integer count of the currency's minor unit (PROTOCOL.md §6),
// never a float: parseAmount works on the digits as text.

const FALLBACK_CURRENCY = "GBP";

function currencyFormat(currency, options = {}) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency, ...options });
  } catch {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: FALLBACK_CURRENCY, ...options });
  }
}

export function minorDigits(currency = FALLBACK_CURRENCY) {
  const digits = currencyFormat(currency).resolvedOptions().maximumFractionDigits;
  return Number.isInteger(digits) ? digits : 2;
}

export function formatMoney(minor, currency = FALLBACK_CURRENCY, { signed = false } = {}) {
  const n = Number(minor);
  if (minor === null || minor === undefined || !Number.isFinite(n)) return "";
  const digits = minorDigits(currency);
  const format = currencyFormat(currency, signed ? { signDisplay: "exceptZero" } : {});
  return format.format(n / 10 ** digits);
}

export function currencySymbol(currency = FALLBACK_CURRENCY) {
  const part = currencyFormat(currency)
    .formatToParts(0)
    .find((p) => p.type === "currency");
  return part ? part.value : currency;
}

/** An amount as an input holds it: "12.50" (no symbol, no grouping). */
export function amountText(minor, currency = FALLBACK_CURRENCY) {
  const digits = minorDigits(currency);
  const n = Math.max(0, Math.trunc(Number(minor) || 0));
  if (digits === 0) return String(n);
  const text = String(n).padStart(digits + 1, "0");
  return `${text.slice(0, -digits)}.${text.slice(-digits)}`;
}

/** The largest amount the service takes (PROTOCOL.md: 1..10¹²). */
const MAX_MINOR = 10 ** 12;

/**
 * An amount a person typed ("12.50", "£12.50", "1,200", "12") as minor units,
 * or an error in words. A comma followed by one or two digits at the end
 * ("12,50") is refused rather than read as twelve hundred and fifty.
 */
export function parseAmount(text, currency = FALLBACK_CURRENCY) {
  const digits = minorDigits(currency);
  const example = digits ? `for example ${amountText(1250, currency)}` : "for example 12";
  let t = String(text ?? "").trim();
  const symbol = currencySymbol(currency);
  for (const prefix of [symbol, currency, currency.toLowerCase()]) {
    if (prefix && t.startsWith(prefix)) t = t.slice(prefix.length).trim();
  }
  if (t === "") return { error: `Enter an amount, ${example}.` };
  if (t.startsWith("-")) return { error: "Enter an amount above zero." };
  if (/,\d{1,2}$/.test(t)) return { error: `Write the amount with a point, ${example}.` };
  if (!/^(\d{1,3}(,\d{3})+|\d+)?(\.\d*)?$/.test(t) || t === ".") {
    return { error: `Enter the amount in numbers only, ${example}.` };
  }
  const [whole, fraction = ""] = t.replaceAll(",", "").split(".");
  if (fraction.length > digits) {
    return {
      error: digits
        ? `An amount has at most ${digits} digits after the point, ${example}.`
        : `Enter a whole amount, ${example}.`,
    };
  }
  const minorText = (whole || "0") + fraction.padEnd(digits, "0");
  if (minorText.replace(/^0+/, "").length > 13) return { error: "That amount is too large." };
  const minor = Number(minorText);
  if (minor <= 0) return { error: "Enter an amount above zero." };
  if (minor > MAX_MINOR) return { error: "That amount is too large." };
  return { minor };
}

/** The first word of a client's name; "A client" when it has none. */
export function firstName(name) {
  const first = typeof name === "string" ? name.trim().split(/\s+/)[0] : "";
  return first || "A client";
}

function parseTime(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : new Date(t);
}

/** "Tue 3 Mar, 14:05" in the browser's time zone; the year too when not this year. */
export function formatWhen(iso, now = new Date()) {
  const d = parseTime(iso);
  if (!d) return "";
  const options = { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
  if (d.getFullYear() !== now.getFullYear()) options.year = "numeric";
  return d.toLocaleString("en-GB", options);
}

/**
 * "Friday 18 December": a payout date ("YYYY-MM-DD", a day on the service's
 * calendar, shown as that day whatever the browser's zone), or the day of a
 * timestamp in the browser's zone.
 */
export function formatDay(value, now = new Date()) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(value ?? ""));
  let d;
  let timeZone;
  if (m) {
    d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
    timeZone = "UTC";
  } else {
    d = parseTime(value);
  }
  if (!d || Number.isNaN(d.getTime())) return "";
  const year = timeZone ? d.getUTCFullYear() : d.getFullYear();
  const options = { weekday: "long", day: "numeric", month: "long", timeZone };
  if (year !== now.getFullYear()) options.year = "numeric";
  return d.toLocaleDateString("en-GB", options);
}

/** A withdrawal's state, and its payout date, in words. */
export function withdrawalWords(w) {
  const day = w.payout_date ? formatDay(w.payout_date) : "";
  switch (w.state) {
    case "awaiting_invoice":
      return { state: "Waiting for your invoice", payout: "Payout date: set when your invoice arrives" };
    case "scheduled":
      return {
        state: day ? `Scheduled: paid on ${day}` : "Scheduled",
        payout: day ? `Payout date: ${day}` : "Payout date: not set yet",
      };
    case "paid":
      return { state: "Paid", payout: day ? `Payout date: ${day}` : "" };
    default:
      return { state: "Being processed", payout: day ? `Payout date: ${day}` : "" };
  }
}

const KINDS = {
  earning: "Earning from a session",
  withdrawal: "Withdrawal",
  topup: "Top-up",
  session_charge: "Session charge",
  refund: "Refund",
};

export function transactionWords(kind) {
  return KINDS[kind] || "Other entry";
}
