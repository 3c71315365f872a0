// mybookings.js — the signed-in person's bookings, loaded and listed with
// bookinglist.js (PROTOCOL.md §8 `GET /v1/bookings`).
//
// API
//   initMyBookings({list, empty, api, role, currency, onJoin, announce, keep, query, onForms})
//     -> {reload(), bookings()}
//     list/empty: the <ul> and its "none" line. api(method, path, body) -> JSON.
//     role: the caller's role. currency() -> the currency code (or a promise).
//     keep(b) -> whether to list b (default: every booking). query: extra
//     query text (e.g. "unmarked=true"). onJoin(b), announce, onForms as bookinglist.js.
//   Lists from a day ago to 365 days ahead (the server takes at most 366 days), soonest first (with `query`: as the
//   server answers, oldest first). Who a booking is with comes from the
//   therapists' public profiles (for a client) and from the call log's names
//   (for a therapist); else its id.

import { createBookingList } from "./bookinglist.js";
import { firstName, formatMoney } from "./money.js";

const DAY_MS = 86400000;

export function initMyBookings({ list, empty, api, role, currency = () => "GBP", onJoin, announce, keep = () => true, query = "", onForms = null }) {
  const names = new Map(); // user id -> name
  const state = { bookings: [], currency: "GBP", loading: null };

  async function learnNames(bookings) {
    if (role === "therapist") {
      if (bookings.some((b) => !names.has(b.client_id))) {
        try {
          const data = await api("GET", "/v1/sessions?limit=200");
          for (const s of (data && data.sessions) || []) if (s.name && s.client_id) names.set(s.client_id, s.name);
        } catch {
          // ids instead of names
        }
      }
      return;
    }
    const ids = [...new Set(bookings.map((b) => b.therapist_id))].filter((id) => !names.has(id));
    await Promise.all(
      ids.map(async (id) => {
        try {
          const p = await api("GET", `/v1/therapists/${encodeURIComponent(id)}`);
          names.set(id, (p && (p.therapist?.name || p.name)) || id);
        } catch {
          names.set(id, id);
        }
      }),
    );
  }

  function nameOf(b) {
    if (role === "client") return names.get(b.therapist_id) || b.therapist_id;
    // A therapist sees a client's first name only, as in its call log.
    const client = role === "therapist" && names.has(b.client_id) ? firstName(names.get(b.client_id)) : `client ${b.client_id}`;
    return role === "operator" ? `${client} and ${names.get(b.therapist_id) || b.therapist_id}` : client;
  }

  const view = createBookingList({
    list,
    api,
    role,
    money: (minor) => formatMoney(minor, state.currency),
    nameOf,
    onJoin,
    announce,
    onChanged: () => reload(),
    onForms,
  });

  async function load() {
    const now = Date.now();
    const range = query
      ? query
      : `from=${encodeURIComponent(new Date(now - DAY_MS).toISOString())}&to=${encodeURIComponent(new Date(now + 365 * DAY_MS).toISOString())}`;
    const [data, cur] = await Promise.all([api("GET", `/v1/bookings?${range}`), currency()]);
    if (typeof cur === "string" && cur) state.currency = cur;
    let bookings = ((data && data.bookings) || []).filter(keep);
    bookings = bookings.sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
    await learnNames(bookings);
    state.bookings = bookings;
    view.render(bookings);
    if (empty) empty.hidden = bookings.length > 0;
    return bookings;
  }

  function reload() {
    if (!state.loading) state.loading = load().finally(() => (state.loading = null));
    return state.loading;
  }

  // Redrawn every minute: "Join the call" appears an hour before the start.
  window.setInterval(() => {
    if (list.isConnected && !view.busy()) view.render(state.bookings);
  }, 60_000);

  return { reload, bookings: () => state.bookings };
}
