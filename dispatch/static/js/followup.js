// followup.js — "Book a follow-up" on the console's "The call has ended"
// panel: one of the therapist's own open session times for the client of the
// call that just ended, optionally weekly (PROTOCOL.md §8: `POST /v1/bookings`
// as the therapist, with `client_id`; an ES module, no build step).
//
// API
//   initFollowUp({token, therapistId, announce}) -> {afterCall(session)}
//     afterCall(session) offers the follow-up for session.client_id (hidden
//     when the session names no client). The button opens the times
//     (slotpicker.js), "Repeat weekly" and "Book the follow-up".
//
// Test hooks (data-testid): followup-open, followup, followup-repeat,
// followup-weeks, followup-confirm, followup-result; slotpicker.js's.

import { failureText } from "./dom.js";
import { httpRequest, newId } from "./protocol.js";
import { bookingError } from "./bookingwords.js";
import { createSlotPicker } from "./slotpicker.js";
import { browserZone, whenWords } from "./when.js";

const $ = (id) => document.getElementById(id);

export function initFollowUp({ token, therapistId, announce }) {
  const ui = {
    open: $("followup-open"),
    box: $("followup"),
    repeat: $("followup-repeat"),
    weeks: $("followup-weeks"),
    weeksField: $("followup-weeks-field"),
    confirm: $("followup-confirm"),
    result: $("followup-result"),
  };
  const api = (method, path, body, options) => httpRequest(token(), method, path, body, options);
  const state = { clientId: null, tz: null, key: "", busy: false };
  const picker = createSlotPicker({ root: $("followup-slots"), api, therapistId, name: "followup-slot" });

  async function zone() {
    if (state.tz) return state.tz;
    try {
      const av = await api("GET", `/v1/therapists/${encodeURIComponent(therapistId)}/availability`);
      state.tz = (av && av.timezone) || browserZone();
    } catch {
      state.tz = browserZone();
    }
    return state.tz;
  }

  async function openBox() {
    ui.open.setAttribute("aria-expanded", "true");
    ui.box.hidden = false;
    ui.result.textContent = "";
    await picker.load("session", await zone());
    (ui.box.querySelector("[data-testid=slot]") || ui.box.querySelector("h3")).focus();
  }

  async function book(event) {
    event.preventDefault();
    if (state.busy || !state.clientId) return;
    const slot = picker.selected();
    if (!slot) {
      ui.result.textContent = "Choose one of the open times first.";
      return;
    }
    const body = { therapist_id: therapistId, client_id: state.clientId, type: "session", start: slot.start };
    if (ui.repeat.checked) {
      const n = Number(ui.weeks.value);
      if (!Number.isInteger(n) || n < 2 || n > 12) {
        ui.result.textContent = "Enter a whole number of weeks from 2 to 12.";
        ui.weeks.focus();
        return;
      }
      body.repeat_weekly = n;
    }
    state.busy = true;
    ui.confirm.setAttribute("aria-busy", "true");
    if (!state.key) state.key = newId("f");
    try {
      const data = await api("POST", "/v1/bookings", body, { headers: { "Idempotency-Key": state.key } });
      state.key = "";
      const made = (data && data.bookings) || [];
      const first = made[0] ? whenWords(Date.parse(made[0].start)) : "";
      ui.result.textContent =
        made.length > 1 ? `Follow-up booked: ${made.length} weekly sessions from ${first}.` : `Follow-up booked for ${first}.`;
      announce(ui.result.textContent);
      picker.load("session", await zone());
    } catch (err) {
      if (err.code !== "network") state.key = "";
      ui.result.textContent = err.status ? bookingError(err, "therapist") : failureText(err, "Nothing was booked");
      announce(ui.result.textContent);
      if (err.code === "slot_taken") picker.load("session", await zone());
    } finally {
      state.busy = false;
      ui.confirm.removeAttribute("aria-busy");
      ui.result.focus();
    }
  }

  function afterCall(session) {
    state.clientId = session && session.client_id ? session.client_id : null;
    state.key = "";
    ui.open.hidden = !state.clientId;
    ui.open.setAttribute("aria-expanded", "false");
    ui.box.hidden = true;
    ui.result.textContent = "";
  }

  ui.open.addEventListener("click", openBox);
  ui.repeat.addEventListener("change", () => {
    ui.weeksField.hidden = !ui.repeat.checked;
  });
  ui.box.addEventListener("submit", book);
  return { afterCall };
}
