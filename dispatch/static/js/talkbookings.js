// talkbookings.js — "Your bookings" on the client's /talk page, and joining a
// booked call there (PROTOCOL.md §8; an ES module, no build step).
//
// API
//   initTalkBookings({token, conn, currency, announce, onSession}) -> {show(visible), join(bookingId)}
//     token() -> the page's current token; conn: its Connection (a call needs
//     it open); currency() -> the wallet's currency (or a promise of it);
//     onSession(session) hands an opened booked call to the page, which runs
//     it as any session (talk.js's session.ready path).
//     show(visible) shows the section (and reloads the list) or hides it.
//     join(id): `POST /v1/bookings/{id}/session` -> {session}, then onSession;
//     the booking page's "Join" comes here as `/talk?join=<id>` (joined once
//     the connection is open, then the address loses the `join`).
//
// Test hooks (data-testid): my-bookings, booking-list, my-bookings-empty,
// join-status; bookinglist.js's.

import { failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";
import { bookingError } from "./bookingwords.js";
import { initMyBookings } from "./mybookings.js";

const $ = (id) => document.getElementById(id);

export function initTalkBookings({ token, conn, currency, announce, onSession }) {
  const api = (method, path, body) => httpRequest(token(), method, path, body);
  const section = $("bookings");
  const status = $("join-status");

  async function join(bookingId) {
    await conn.ready;
    const data = await api("POST", `/v1/bookings/${encodeURIComponent(bookingId)}/session`);
    if (!data || !data.session) throw new Error("no session in the answer");
    await onSession(data.session);
  }

  const mine = initMyBookings({
    list: $("bookings-list"),
    empty: $("bookings-empty"),
    api,
    role: "client",
    currency: async () => (await currency()) || "GBP",
    announce,
    onJoin: (b) => join(b.id),
  });

  function show(visible) {
    section.hidden = !visible;
    if (visible) {
      mine.reload().catch((err) => {
        $("bookings-empty").textContent = failureText(err, "Your bookings could not be loaded");
        $("bookings-empty").hidden = false;
      });
    }
  }

  const params = new URLSearchParams(location.search);
  const wanted = params.get("join");
  if (wanted) {
    params.delete("join");
    const rest = params.toString();
    history.replaceState(history.state, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
    status.textContent = "Opening your booked call…";
    status.hidden = false;
    join(wanted).then(
      () => {
        status.hidden = true;
      },
      (err) => {
        status.textContent = err.status ? bookingError(err) : failureText(err, "The call could not be opened");
        announce(status.textContent);
      },
    );
  }

  return { show, join };
}
