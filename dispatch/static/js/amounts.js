// amounts.js — minutes of a call that money buys (an ES module, no build step;
// pure). Amounts themselves are written and read by money.js.
//
// API
//   minutesFor(balanceMinor, priceMinor) -> whole minutes the balance pays for
//   startedMinutes(seconds) -> minutes billed for a live time (per started minute)
//   spokenMinutes(n) -> "1 minute", "8 minutes"

export function minutesFor(balanceMinor, priceMinor) {
  if (!(priceMinor > 0) || typeof balanceMinor !== "number") return null;
  return Math.max(0, Math.floor(balanceMinor / priceMinor));
}

/** Billed minutes for `seconds` of a live session: every started minute counts. */
export function startedMinutes(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  return Math.max(1, Math.ceil(s / 60));
}

export function spokenMinutes(n) {
  return `${n} minute${n === 1 ? "" : "s"}`;
}
