// bookinglist.js — a list of bookings with what each person may do to them
// (PROTOCOL.md §8), shared by the client's pages, the console and /ops.
//
// API
//   createBookingList({list, api, role, money, nameOf, onJoin, onChanged, announce, onForms})
//     -> {render(bookings), busy()}   busy(): a cancel is being confirmed (do not redraw)
//     list: an empty <ul>. role: "client" | "therapist" | "operator".
//     money(minor) -> "£60.00". nameOf(b) -> who the booking is with, in words.
//     onJoin(b) is called when "Join" is pressed (the page opens the call);
//     onChanged() after a cancel or an outcome (the page reloads its lists).
//     onForms(b, name, button), given (the console): each booking also has
//     "Client forms" (the client's forms and consents, clientforms.js).
//   Each booking shows its type, day and time (the browser's zone), who it is
//   with, its state and its money. Its buttons:
//     "Join the call"     (scheduled or occurred, not ended, from an hour before
//                          the start; the server refuses earlier than 10
//                          minutes before: said in words). Before that, a line
//                          says from when the call can be joined.
//     "Cancel"            (scheduled, not ended) -> first says what cancelling
//                          now costs (the late fee, before anything is done),
//                          then "Yes, cancel" / "Keep it" -> POST .../cancel
//     "It took place" / "The client did not come"  (therapist, operator; once
//                          started) -> POST .../outcome
//
// Test hooks (data-testid): booking (data-booking-id, data-state), booking-when,
// booking-state, booking-join, booking-cancel, cancel-terms, booking-cancel-confirm,
// booking-cancel-keep, booking-occurred, booking-no-show, booking-status,
// booking-client-forms.

import { el, failureText } from "./dom.js";
import { bookingError, cancelWords, joinOpen, JOIN_EARLY_MS, outcomeOpen, stateWords, typeWords } from "./bookingwords.js";
import { timeWords, whenWords } from "./when.js";

/** "Join the call" shows from this long before the start (the list is redrawn every minute). */
const JOIN_SHOWN_MS = 60 * 60 * 1000;

export function createBookingList({ list, api, role, money, nameOf, onJoin, onChanged = () => {}, announce = () => {}, onForms = null }) {
  const said = new Map(); // booking id -> the last result, kept across a reload of the list

  function say(status, text) {
    status.textContent = text;
    const id = status.closest("[data-booking-id]")?.dataset.bookingId;
    if (id) said.set(id, text);
    if (text) announce(text);
  }

  async function act(b, status, path, body, done) {
    say(status, "Working…");
    try {
      await api("POST", `/v1/bookings/${encodeURIComponent(b.id)}/${path}`, body);
      say(status, done);
      onChanged(b);
      return true;
    } catch (err) {
      say(status, err.status ? bookingError(err) : failureText(err, "Nothing changed"));
      if (err.code === "conflict") onChanged(b);
      return false;
    }
  }

  function cancelFlow(b, item, status, cancel) {
    const terms = el("p", { className: "qc-bk-terms", "data-testid": "cancel-terms", text: cancelWords(b, role, money) });
    const yes = el("button", {
      type: "button",
      className: "qc-button qc-button-danger",
      "data-testid": "booking-cancel-confirm",
      text: "Yes, cancel",
    });
    const keep = el("button", { type: "button", className: "qc-button", "data-testid": "booking-cancel-keep", text: "Keep it" });
    const box = el("div", { className: "qc-bk-confirm", role: "group", "aria-label": "Cancel this booking?" }, terms, el("div", { className: "qc-actions" }, yes, keep));
    cancel.hidden = true;
    item.querySelector(".qc-bk-item-actions").after(box);
    yes.focus();
    let sent = false; // not disabled: the focus stays on it while the call runs
    yes.addEventListener("click", () => {
      if (sent) return;
      sent = true;
      yes.setAttribute("aria-busy", "true");
      act(b, status, "cancel", undefined, "The booking is cancelled.").then((ok) => {
        sent = ok;
        yes.removeAttribute("aria-busy");
      });
    });
    keep.addEventListener("click", () => {
      box.remove();
      cancel.hidden = false;
      cancel.focus();
    });
  }

  async function join(b, status) {
    const start = Date.parse(b.start);
    if (!joinOpen(b) && Date.now() < start - JOIN_EARLY_MS) {
      say(status, `You can join from ${timeWords(start - JOIN_EARLY_MS)}, 10 minutes before the start.`);
      return;
    }
    say(status, "Opening the call…");
    try {
      await onJoin(b);
      status.textContent = "";
    } catch (err) {
      say(status, err.status ? bookingError(err) : failureText(err, "The call could not be opened"));
    }
  }

  function item(b) {
    const now = Date.now();
    const start = Date.parse(b.start);
    const end = Date.parse(b.end);
    const open = b.state === "scheduled" && now <= end;
    const joinable = (b.state === "scheduled" || b.state === "occurred") && now <= end;
    const status = el("p", {
      className: "qc-bk-status",
      "data-testid": "booking-status",
      role: "status",
      tabindex: "-1",
      text: said.get(b.id) || "",
    });
    const money_ = Number(b.fee_minor) > 0
      ? `Charged ${money(b.fee_minor)}`
      : Number(b.price_minor) > 0
        ? `${money(b.price_minor)}${b.state === "scheduled" ? " (held in the wallet)" : ""}`
        : "Free";
    const actions = el("div", { className: "qc-actions qc-bk-item-actions" });
    const li = el(
      "li",
      { className: "qc-bk-item", "data-testid": "booking", "data-booking-id": b.id, "data-state": b.state },
      el(
        "p",
        { className: "qc-bk-row" },
        el("strong", { "data-testid": "booking-when", text: Number.isNaN(start) ? "" : `${whenWords(start)}–${timeWords(end)}` }),
        el("span", { className: `qc-bk-state qc-bk-state-${b.state}`, "data-testid": "booking-state", text: stateWords(b.state, b) }),
      ),
      el("p", { className: "qc-bk-meta", text: `${typeWords(b.type)} with ${nameOf(b)}. ${money_}.` }),
      actions,
      status,
    );
    if (joinable && role !== "operator" && start - now > JOIN_SHOWN_MS) {
      li.insertBefore(
        el("p", { className: "qc-bk-meta", text: `You can join the call from ${timeWords(start - JOIN_EARLY_MS)} on the day.` }),
        actions,
      );
    } else if (joinable && role !== "operator") {
      const joinButton = el("button", { type: "button", className: "qc-button qc-button-primary", "data-testid": "booking-join", text: "Join the call" });
      joinButton.addEventListener("click", () => join(b, status));
      actions.append(joinButton);
    }
    if (open) {
      const cancel = el("button", { type: "button", className: "qc-button", "data-testid": "booking-cancel", text: "Cancel" });
      cancel.addEventListener("click", () => cancelFlow(b, li, status, cancel));
      actions.append(cancel);
    }
    if (role !== "client" && outcomeOpen(b, now)) {
      const occurred = el("button", { type: "button", className: "qc-button", "data-testid": "booking-occurred", text: "It took place" });
      const noShow = el("button", { type: "button", className: "qc-button", "data-testid": "booking-no-show", text: "The client did not come" });
      occurred.addEventListener("click", () => act(b, status, "outcome", { outcome: "occurred" }, "Marked as taken place."));
      noShow.addEventListener("click", () => act(b, status, "outcome", { outcome: "no_show" }, "Marked as a no-show."));
      actions.append(occurred, noShow);
    }
    if (onForms && b.client_id) {
      const forms = el("button", { type: "button", className: "qc-button", "data-testid": "booking-client-forms", text: "Client forms" });
      forms.addEventListener("click", () => onForms(b, nameOf(b), forms));
      actions.append(forms);
    }
    if (!actions.children.length) actions.hidden = true;
    return li;
  }

  function render(bookings) {
    const focused = list.contains(document.activeElement) ? document.activeElement : null;
    const focusKey = focused ? [focused.closest("[data-booking-id]")?.dataset.bookingId, focused.dataset.testid] : null;
    list.replaceChildren(...bookings.map(item));
    if (focusKey) {
      const again = list.querySelector(`[data-booking-id="${focusKey[0]}"] [data-testid="${focusKey[1]}"]`);
      const fallback = list.querySelector(`[data-booking-id="${focusKey[0]}"] button`) || list.querySelector(`[data-booking-id="${focusKey[0]}"] [data-testid=booking-status]`);
      if (again || fallback) (again || fallback).focus();
    }
  }

  return { render, busy: () => !!list.querySelector(".qc-bk-confirm") };
}
