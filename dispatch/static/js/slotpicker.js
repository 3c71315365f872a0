// slotpicker.js — a therapist's open slots, by day, to pick one (PROTOCOL.md §8).
//
// API
//   createSlotPicker({root, api, therapistId, onChange}) -> {load(type, tz), more(), selected(), extras}
//     root: an empty element the picker fills. api(method, path) -> JSON.
//     therapistId: the id, or a function giving it at each load.
//     load(type, tz) asks `GET /v1/therapists/{id}/slots?type=&from=&days=`
//     from today in the therapist's zone tz, for DAYS days; more() adds the next
//     DAYS. Slots are grouped by day and shown in the browser's own zone (said
//     once above them): a <select> of the days that have open times (the first
//     chosen), then that day's times, each a radio button (name "slot"): one Tab
//     reaches the group, arrow keys move between times. onChange(slot | null) follows the
//     choice; selected() -> {start, end} | null. extras: the answer's other
//     fields (price_minor, policy, ... when the server gives them).
//
// Test hooks (data-testid): slot-day-select, slot-days, slot-day (data-day),
// slot (data-start, data-end), slots-status, slots-more.

import { el, failureText } from "./dom.js";
import { addDays, browserZone, dayWords, timeWords, todayIn, zoneParts, zoneWords } from "./when.js";

const DAYS = 14;
const MAX_AHEAD_DAYS = 180;

export function createSlotPicker({ root, api, therapistId, onChange = () => {}, name = "slot" }) {
  const zone = browserZone();
  const selectId = `${name}-day`;
  const select = el("select", { id: selectId, "data-testid": "slot-day-select" });
  const dayField = el(
    "div",
    { className: "qc-bk-form", hidden: true },
    el("label", { for: selectId, text: "Day" }),
    select,
  );
  const status = el("p", { className: "qc-muted", "data-testid": "slots-status", role: "status" });
  const days = el("div", { className: "qc-bk-days", "data-testid": "slot-days" });
  const more = el("button", {
    type: "button",
    className: "qc-button qc-button-quiet",
    "data-testid": "slots-more",
    text: "Show later days",
    hidden: true,
  });
  root.replaceChildren(
    el("p", { className: "qc-hint", text: `Times are in your own time zone: ${zoneWords(zone)}.` }),
    dayField,
    days,
    status,
    el("div", { className: "qc-actions" }, more),
  );
  const state = { type: "session", tz: "UTC", next: null, start: null, byDay: new Map(), picked: null, seq: 0 };
  const picker = { extras: {} };

  function slotInput(s, t) {
    const input = el("input", {
      type: "radio",
      name,
      value: s.start,
      "data-testid": "slot",
      "data-start": s.start,
      "data-end": s.end,
    });
    if (state.picked && state.picked.start === s.start) input.checked = true;
    input.addEventListener("change", () => {
      if (!input.checked) return;
      state.picked = { start: s.start, end: s.end };
      onChange(state.picked);
    });
    return el("label", { className: "qc-chip qc-bk-slot" }, input, ` ${timeWords(t, zone)}`);
  }

  /** The chosen day's times. */
  function showDay(key) {
    const list = state.byDay.get(key) || [];
    const title = `slot-day-${name}`;
    days.replaceChildren(
      el(
        "section",
        { className: "qc-bk-day", "data-testid": "slot-day", "data-day": key },
        el("h4", { id: title, text: `${dayWords(key)}: ${list.length} open ${list.length === 1 ? "time" : "times"}` }),
        el("div", { className: "qc-bk-slots", role: "group", "aria-labelledby": title }, ...list.map(([s, t]) => slotInput(s, t))),
      ),
    );
  }

  function add(list) {
    for (const s of list) {
      const t = Date.parse(s.start);
      if (Number.isNaN(t)) continue;
      const key = zoneParts(t, zone).key;
      if (!state.byDay.has(key)) {
        state.byDay.set(key, []);
        select.append(el("option", { value: key, text: dayWords(key) }));
      }
      state.byDay.get(key).push([s, t]);
    }
    for (const option of select.options) {
      const n = state.byDay.get(option.value).length;
      option.textContent = `${dayWords(option.value, { short: true })}: ${n} ${n === 1 ? "time" : "times"}`;
    }
    dayField.hidden = state.byDay.size === 0;
    if (state.byDay.size && !days.children.length) showDay(select.value);
    else if (select.value) showDay(select.value);
  }

  async function fetchDays(seq) {
    const from = state.next;
    status.textContent = "Looking for open times…";
    more.hidden = true;
    try {
      const q = `type=${encodeURIComponent(state.type)}&from=${from}&days=${DAYS}`;
      const tid = typeof therapistId === "function" ? therapistId() : therapistId;
      const data = await api("GET", `/v1/therapists/${encodeURIComponent(tid)}/slots?${q}`);
      if (seq !== state.seq) return 0;
      const list = (data && data.slots) || [];
      const { slots: _ignored, ...extras } = data || {};
      picker.extras = extras;
      add(list);
      state.next = addDays(from, DAYS);
      const ahead = Math.round((Date.parse(state.next) - Date.parse(state.start)) / 86400000);
      more.hidden = ahead >= MAX_AHEAD_DAYS;
      status.textContent = state.byDay.size
        ? list.length
          ? ""
          : `No more open times up to ${dayWords(addDays(state.next, -1))}.`
        : `No open times in the next ${ahead} days.${more.hidden ? "" : " Look further ahead."}`;
      return list.length;
    } catch (err) {
      if (seq !== state.seq) return 0;
      status.textContent = failureText(err, "The open times could not be loaded");
      more.hidden = false;
      return 0;
    }
  }

  picker.load = async (type, tz) => {
    state.type = type;
    state.tz = tz || "UTC";
    state.start = todayIn(state.tz);
    state.next = state.start;
    state.byDay = new Map();
    state.picked = null;
    state.seq += 1;
    select.replaceChildren();
    days.replaceChildren();
    dayField.hidden = true;
    onChange(null);
    await fetchDays(state.seq);
  };
  picker.more = async () => {
    const known = state.byDay.size;
    await fetchDays(state.seq);
    if (state.byDay.size > known) {
      select.selectedIndex = known; // the first new day
      showDay(select.value);
      pickNone();
      select.focus();
    } else {
      (more.hidden ? status : more).focus?.();
    }
  };
  function pickNone() {
    if (state.picked) {
      state.picked = null;
      onChange(null);
    }
  }
  picker.selected = () => state.picked;
  select.addEventListener("change", () => {
    showDay(select.value);
    pickNone();
  });
  more.addEventListener("click", () => picker.more());
  return picker;
}
