// when.js — calendar days, wall-clock times and time zones for the booking
// pages (an ES module, no build step, no DOM: pure functions over Intl).
//
// API
//   browserZone() -> the browser's IANA zone ("Europe/London"), or "UTC"
//   zoneParts(ms, tz) -> {key: "YYYY-MM-DD", hhmm: "14:05", day: 0..6 (Monday 0), minutes}
//     the wall clock at instant ms in zone tz
//   todayIn(tz, nowMs?) -> "YYYY-MM-DD": today's date in tz
//   addDays(key, n) -> "YYYY-MM-DD"
//   weekdayOf(key) -> 0..6 (Monday 0) of a calendar day
//   mondayOf(key) -> the Monday of that day's week
//   dayWords(key, {short}) -> "Monday 7 December" ("Mon 7 Dec"); the year when not this year
//   timeWords(ms, tz?) -> "14:05" in tz (the browser's zone when omitted)
//   whenWords(ms, tz?) -> "Monday 7 December, 14:05"
//   zoneWords(tz) -> "London time (GMT)"-like words for a zone
//   hhmmToMinutes("09:30") -> 570; minutesToHhmm(570) -> "09:30"; null when unreadable
//   DAYS -> ["mon", ..., "sun"] (the protocol's day names), DAY_NAMES -> ["Monday", ...]

export const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
export const DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

export function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

const partsCache = new Map();

function partsFormat(tz) {
  let fmt = partsCache.get(tz);
  if (!fmt) {
    try {
      fmt = new Intl.DateTimeFormat("en-GB", {
        timeZone: tz,
        year: "numeric",
        month: "2-digit",
        day: "2-digit",
        hour: "2-digit",
        minute: "2-digit",
        hourCycle: "h23",
      });
    } catch {
      fmt = partsFormat("UTC");
    }
    partsCache.set(tz, fmt);
  }
  return fmt;
}

export function zoneParts(ms, tz) {
  const parts = {};
  for (const p of partsFormat(tz).formatToParts(new Date(ms))) parts[p.type] = p.value;
  const hour = parts.hour === "24" ? "00" : parts.hour;
  const key = `${parts.year}-${parts.month}-${parts.day}`;
  return {
    key,
    hhmm: `${hour}:${parts.minute}`,
    day: weekdayOf(key),
    minutes: Number(hour) * 60 + Number(parts.minute),
  };
}

export function todayIn(tz, nowMs = Date.now()) {
  return zoneParts(nowMs, tz).key;
}

function keyDate(key) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(key));
  return m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : null;
}

export function addDays(key, n) {
  const d = keyDate(key);
  if (!d) return key;
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

export function weekdayOf(key) {
  const d = keyDate(key);
  return d ? (d.getUTCDay() + 6) % 7 : 0;
}

export function mondayOf(key) {
  return addDays(key, -weekdayOf(key));
}

export function dayWords(key, { short = false } = {}) {
  const d = keyDate(key);
  if (!d) return String(key);
  const options = short
    ? { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" }
    : { weekday: "long", day: "numeric", month: "long", timeZone: "UTC" };
  if (d.getUTCFullYear() !== new Date().getFullYear()) options.year = "numeric";
  return d.toLocaleDateString("en-GB", options);
}

export function timeWords(ms, tz = browserZone()) {
  return zoneParts(ms, tz).hhmm;
}

export function whenWords(ms, tz = browserZone()) {
  const p = zoneParts(ms, tz);
  return `${dayWords(p.key)}, ${p.hhmm}`;
}

export function zoneWords(tz) {
  let abbr = "";
  try {
    const part = new Intl.DateTimeFormat("en-GB", { timeZone: tz, timeZoneName: "short" })
      .formatToParts(new Date())
      .find((p) => p.type === "timeZoneName");
    abbr = part ? part.value : "";
  } catch {
    return tz;
  }
  const city = String(tz).split("/").pop().replaceAll("_", " ");
  return abbr && abbr !== city ? `${city} time (${abbr})` : `${city} time`;
}

export function hhmmToMinutes(text) {
  const m = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(String(text ?? ""));
  return m ? Number(m[1]) * 60 + Number(m[2]) : null;
}

export function minutesToHhmm(minutes) {
  const m = Math.max(0, Math.min(24 * 60 - 1, Math.round(minutes)));
  return `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`;
}
