// availability.js — the console's "Availability" section: a therapist's weekly
// hours and its days off or special hours (PROTOCOL.md §8
// `GET`/`PUT /v1/therapists/{id}/availability`), with the week as a calendar
// (weekcal.js) and a warning under 1 hour of weekly availability.
//
// API
//   initAvailability({token, therapistId, announce, showView, currentView, baseView})
//     -> {open, back}   as the other console sections (earnings.js).
//   Each day has its windows ("From"/"To", wall clock in the therapist's zone)
//   with "Remove", and "Add hours on <day>"; each override a date and hours
//   (both empty: a day off) with "Remove"; "Save availability" sends it all.
//   The server's refusal is said in words (its message names the field).
//
// Test hooks (data-testid): availability-open, availability-view, avail-timezone,
// avail-day (data-day), avail-window, avail-from, avail-to, avail-remove,
// avail-add-<day>, avail-override, avail-override-date, avail-override-from,
// avail-override-to, avail-add-override, avail-hours, avail-warning, avail-save,
// avail-status, avail-error, cal-week, cal-prev, cal-next, cal-title; weekcal.js's.

import { BACK_WORDS, el, failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";
import { addDays, browserZone, DAY_NAMES, DAYS, dayWords, mondayOf, todayIn } from "./when.js";
import { renderWeek, weeklyHours } from "./weekcal.js";

const $ = (id) => document.getElementById(id);

export function initAvailability({ token, therapistId, announce, showView, currentView, baseView = () => "list" }) {
  const ui = {
    open: $("availability-open"),
    view: $("view-availability"),
    title: $("availability-title"),
    back: $("availability-back"),
    form: $("avail-form"),
    tz: $("avail-timezone"),
    week: $("avail-week"),
    overrides: $("avail-overrides"),
    addOverride: $("avail-add-override"),
    hours: $("avail-hours"),
    warning: $("avail-warning"),
    status: $("avail-status"),
    error: $("avail-error"),
    cal: $("cal-week"),
    calTitle: $("cal-title"),
  };
  const state = { monday: null, bookings: [], loaded: false };
  const api = (method, path, body) => httpRequest(token(), method, path, body);
  const path = `/v1/therapists/${encodeURIComponent(therapistId)}/availability`;

  function timeInput(testid, label, value) {
    return el(
      "label",
      {},
      label,
      el("input", { type: "time", "data-testid": testid, value: value || "", step: "300" }),
    );
  }

  function windowRow(day, w = { start: "09:00", end: "17:00" }) {
    const remove = el("button", { type: "button", className: "qc-button qc-button-quiet", "data-testid": "avail-remove", text: "Remove" });
    const row = el(
      "div",
      { className: "qc-bk-window", "data-testid": "avail-window", role: "group", "aria-label": `${DAY_NAMES[DAYS.indexOf(day)]} hours` },
      timeInput("avail-from", "From", w.start),
      timeInput("avail-to", "To", w.end),
      remove,
    );
    remove.addEventListener("click", () => {
      const box = row.parentElement;
      row.remove();
      (box.querySelector("[data-testid=avail-remove]") || box.parentElement.querySelector("button")).focus();
      changed();
    });
    return row;
  }

  function renderWeekly(weekly) {
    ui.week.replaceChildren();
    DAYS.forEach((day, i) => {
      const rows = el("div", { className: "qc-bk-rows" }, ...weekly.filter((w) => w.day === day).map((w) => windowRow(day, w)));
      const add = el("button", { type: "button", className: "qc-button qc-button-quiet", "data-testid": `avail-add-${day}`, text: `Add hours on ${DAY_NAMES[i]}` });
      add.addEventListener("click", () => {
        const row = windowRow(day);
        rows.append(row);
        row.querySelector("input").focus();
        changed();
      });
      ui.week.append(
        el("section", { className: "qc-bk-weekday", "data-testid": "avail-day", "data-day": day }, el("h4", { text: DAY_NAMES[i] }), rows, add),
      );
    });
  }

  function overrideRow(o = { date: "", slots: [] }) {
    const slot = (o.slots || [])[0] || { start: "", end: "" };
    const remove = el("button", { type: "button", className: "qc-button qc-button-quiet", "data-testid": "avail-remove", text: "Remove" });
    const row = el(
      "li",
      { className: "qc-bk-override", "data-testid": "avail-override" },
      el("label", {}, "Date", el("input", { type: "date", "data-testid": "avail-override-date", value: o.date || "" })),
      timeInput("avail-override-from", "From (empty: day off)", slot.start),
      timeInput("avail-override-to", "To", slot.end),
      remove,
    );
    remove.addEventListener("click", () => {
      row.remove();
      ui.addOverride.focus();
      changed();
    });
    return row;
  }

  function read() {
    const weekly = [];
    for (const box of ui.week.querySelectorAll("[data-testid=avail-day]")) {
      for (const row of box.querySelectorAll("[data-testid=avail-window]")) {
        weekly.push({
          day: box.dataset.day,
          start: row.querySelector("[data-testid=avail-from]").value,
          end: row.querySelector("[data-testid=avail-to]").value,
        });
      }
    }
    const overrides = [];
    for (const row of ui.overrides.querySelectorAll("[data-testid=avail-override]")) {
      const date = row.querySelector("[data-testid=avail-override-date]").value;
      const start = row.querySelector("[data-testid=avail-override-from]").value;
      const end = row.querySelector("[data-testid=avail-override-to]").value;
      overrides.push({ date, slots: start || end ? [{ start, end }] : [] });
    }
    return { timezone: ui.tz.value.trim(), weekly, overrides };
  }

  function renderCalendar() {
    const av = read();
    const tz = av.timezone || browserZone();
    if (!state.monday) state.monday = mondayOf(todayIn(tz));
    ui.calTitle.textContent = `The week of ${dayWords(state.monday)}`;
    renderWeek(ui.cal, { availability: av, bookings: state.bookings, monday: state.monday, tz });
  }

  function changed() {
    const hours = weeklyHours(read().weekly);
    const rounded = Math.round(hours * 10) / 10;
    ui.hours.textContent = `${rounded} ${rounded === 1 ? "hour" : "hours"} a week open for bookings.`;
    ui.warning.hidden = hours >= 1;
    ui.status.textContent = "";
    renderCalendar();
  }

  async function load() {
    ui.error.textContent = "";
    let av = null;
    try {
      av = await api("GET", path);
    } catch (err) {
      if (err.status !== 404) ui.error.textContent = failureText(err, "Your availability could not be loaded");
    }
    if (!av) {
      let tz = browserZone();
      try {
        const p = await api("GET", `/v1/therapists/${encodeURIComponent(therapistId)}`);
        if (p && typeof p.timezone === "string" && p.timezone) tz = p.timezone;
      } catch {
        // the browser's zone, then
      }
      av = { timezone: tz, weekly: [], overrides: [] };
    }
    ui.tz.value = av.timezone || browserZone();
    renderWeekly(av.weekly || []);
    ui.overrides.replaceChildren(...(av.overrides || []).map(overrideRow));
    try {
      const now = Date.now();
      const q = `from=${encodeURIComponent(new Date(now - 7 * 86400000).toISOString())}&to=${encodeURIComponent(new Date(now + 120 * 86400000).toISOString())}`;
      const data = await api("GET", `/v1/bookings?${q}`);
      state.bookings = (data && data.bookings) || [];
    } catch {
      state.bookings = [];
    }
    changed();
  }

  async function save(event) {
    event.preventDefault();
    ui.error.textContent = "";
    ui.status.textContent = "Saving…";
    try {
      await api("PUT", path, read());
      ui.status.textContent = "Your availability is saved. Clients see these times now.";
      announce(ui.status.textContent);
    } catch (err) {
      ui.status.textContent = "";
      ui.error.textContent = err.status === 422 ? `Not saved: ${err.message}` : failureText(err, "Not saved");
      announce(ui.error.textContent);
      ui.error.focus();
    }
  }

  async function open() {
    if (!ui.view.isConnected) {
      ui.open.hidden = true;
      return;
    }
    if (currentView() !== "availability") {
      ui.back.textContent = BACK_WORDS[baseView()] || "Back";
      showView("availability");
    } else {
      ui.title.focus();
    }
    await load();
  }

  function back() {
    showView(baseView(), { focus: false });
    ui.open.focus();
  }

  ui.open.addEventListener("click", open);
  ui.back.addEventListener("click", back);
  ui.form.addEventListener("submit", save);
  ui.form.addEventListener("input", changed);
  ui.addOverride.addEventListener("click", () => {
    const row = overrideRow({ date: addDays(todayIn(ui.tz.value || browserZone()), 1), slots: [] });
    ui.overrides.append(row);
    row.querySelector("input").focus();
    changed();
  });
  $("cal-prev").addEventListener("click", () => {
    state.monday = addDays(state.monday, -7);
    renderCalendar();
  });
  $("cal-next").addEventListener("click", () => {
    state.monday = addDays(state.monday, 7);
    renderCalendar();
  });
  ui.open.hidden = false;
  return { open, back };
}
