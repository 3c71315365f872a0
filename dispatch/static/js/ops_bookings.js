// ops_bookings.js — scheduled care on /ops (PROTOCOL.md §8): the bookings
// left unmarked 48 hours after their end (`GET /v1/bookings?unmarked=true`),
// each with "It took place" / "The client did not come" / "Cancel"
// (bookinglist.js), and "Book on a client's behalf": a client id and a
// therapist id open that therapist's booking page for the client
// (`/book/{therapist}?client=`), or the directory (`/find?client=`) without one.
// Refreshed by its button and every 60 s.
//
// API
//   startBookings(conn) -> {refresh()}
//
// Test hooks (data-testid): ops-bookings, ops-unmarked-list, ops-unmarked-empty,
// ops-bookings-refresh, ops-book-form, ops-book-client, ops-book-therapist,
// ops-book-go; bookinglist.js's.

import { failureText } from "./dom.js";
import { initMyBookings } from "./mybookings.js";

const REFRESH_MS = 60_000;
const $ = (id) => document.getElementById(id);

export function startBookings(conn) {
  const api = (method, path, body) => conn.http(method, path, body);
  const empty = $("ops-unmarked-empty");
  const unmarked = initMyBookings({
    list: $("ops-unmarked-list"),
    empty,
    api,
    role: "operator",
    query: "unmarked=true",
    announce: () => {},
    onJoin: async () => {},
  });

  function refresh() {
    return unmarked.reload().catch((err) => {
      empty.textContent = failureText(err, "The unmarked bookings could not be loaded");
      empty.hidden = false;
    });
  }

  $("ops-book-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const client = $("ops-book-client").value.trim();
    const therapist = $("ops-book-therapist").value.trim();
    const error = $("ops-book-error");
    if (!client) {
      error.textContent = "Enter the client's id.";
      $("ops-book-client").focus();
      return;
    }
    error.textContent = "";
    const q = `?client=${encodeURIComponent(client)}`;
    location.assign(therapist ? `/book/${encodeURIComponent(therapist)}${q}` : `/find${q}`);
  });
  $("ops-bookings-refresh").addEventListener("click", () => refresh());
  window.setInterval(refresh, REFRESH_MS);
  refresh();
  return { refresh };
}
