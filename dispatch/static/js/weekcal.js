// weekcal.js — one week of a therapist's calendar: the open hours of each day
// (the weekly hours, or that date's override) and the bookings, in the
// therapist's own zone (an ES module, no build step).
//
// API
//   windowsOn(availability, key) -> [{start, end}] the open hours of day key ("YYYY-MM-DD")
//   weeklyHours(weekly) -> hours a week of the weekly windows (a number)
//   renderWeek(list, {availability, bookings, monday, tz}) -> fills the <ol> list:
//     one <li> per day (data-testid "cal-day", data-day) with its open hours
//     ("cal-open"), its bookings ("cal-booked") or "Day off" ("cal-off").

import { el } from "./dom.js";
import { addDays, DAYS, dayWords, hhmmToMinutes, timeWords, zoneParts } from "./when.js";

export function windowsOn(av, key) {
  const override = (av.overrides || []).find((o) => o.date === key);
  if (override) return [...(override.slots || [])];
  const day = DAYS[(new Date(`${key}T00:00:00Z`).getUTCDay() + 6) % 7];
  return (av.weekly || []).filter((w) => w.day === day).map((w) => ({ start: w.start, end: w.end }));
}

export function weeklyHours(weekly) {
  let minutes = 0;
  for (const w of weekly || []) {
    const s = hhmmToMinutes(w.start);
    const e = hhmmToMinutes(w.end);
    if (s !== null && e !== null && e > s) minutes += e - s;
  }
  return minutes / 60;
}

export function renderWeek(list, { availability, bookings = [], monday, tz }) {
  const days = [];
  for (let i = 0; i < 7; i += 1) {
    const key = addDays(monday, i);
    const open = windowsOn(availability, key).sort((a, b) => (a.start < b.start ? -1 : 1));
    const booked = bookings
      .filter((b) => b.state === "scheduled" && zoneParts(Date.parse(b.start), tz).key === key)
      .sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
    const items = [
      ...open.map((w) => el("li", { className: "qc-bk-cal-open", "data-testid": "cal-open", text: `Open ${w.start}–${w.end}` })),
      ...booked.map((b) =>
        el("li", {
          className: "qc-bk-cal-booked",
          "data-testid": "cal-booked",
          text: `Booked ${timeWords(Date.parse(b.start), tz)}–${timeWords(Date.parse(b.end), tz)}`,
        }),
      ),
    ];
    if (!open.length) items.unshift(el("li", { className: "qc-bk-cal-off", "data-testid": "cal-off", text: "Day off" }));
    days.push(
      el(
        "li",
        { className: "qc-bk-cal-day", "data-testid": "cal-day", "data-day": key },
        el("h4", { text: dayWords(key, { short: true }) }),
        el("ul", {}, ...items),
      ),
    );
  }
  list.replaceChildren(...days);
}
