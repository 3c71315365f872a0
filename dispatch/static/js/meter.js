// meter.js — the running time and cost of the client's call on /talk (an ES module).
//
// A session is billed per started minute from the moment it went live (both
// sides joined) to its end (PROTOCOL.md §6). The meter shows that as it goes:
// "2:05 · about £4.50 so far", the price × started minutes. It is an estimate:
// the charge written at the end is what counts, and the end view shows it.
//
// API
//   initMeter({el, note})           el: the meter line; note: the "estimate" line.
//   meterWaiting()                  before live: "charging starts when you are both in".
//   startMeter(startedAtIso, priceMinor, currency)   ticks each second.
//   stopMeter()                     hides it.
//
// Test hooks (data-testid): call-meter (data-minutes: started minutes so far).

import { formatClock } from "./protocol.js";
import { startedMinutes } from "./amounts.js";
import { formatMoney } from "./money.js";

let el = null;
let note = null;
let timer = 0;
let since = 0;
let price = null;
let currency = "GBP";

export function initMeter(options) {
  el = options.el;
  note = options.note;
}

export function meterWaiting() {
  stopMeter();
  el.textContent = "Not charging yet: the clock starts when you are both in the call.";
  el.hidden = false;
}

export function startMeter(startedAtIso, priceMinor, currencyCode) {
  const t = Date.parse(startedAtIso || "");
  if (Number.isNaN(t)) return;
  since = t;
  price = typeof priceMinor === "number" && priceMinor > 0 ? priceMinor : null;
  currency = currencyCode || "GBP";
  if (!timer) timer = setInterval(render, 1000);
  render();
  el.hidden = false;
  note.hidden = price === null;
}

function render() {
  const seconds = Math.max(0, (Date.now() - since) / 1000);
  const minutes = startedMinutes(seconds);
  el.dataset.minutes = String(minutes);
  const cost = price === null ? "" : ` · about ${formatMoney(price * minutes, currency)} so far`;
  el.textContent = `In the call for ${formatClock(seconds)}${cost}`;
}

export function stopMeter() {
  if (timer) clearInterval(timer);
  timer = 0;
  if (el) el.hidden = true;
  if (note) note.hidden = true;
}
