"""Scheduled care in a real browser (issue #14, PROTOCOL.md §8): the pages that book,
cancel, join and follow up, each used partly by keyboard and checked at 360 px.

- A client finds a therapist in the directory (``/find``), opens its booking page
  (``/book/{id}``), books the free intro, is refused a second one in words, books a
  weekly series (the cancellation terms and the money held are said before "Confirm"),
  then cancels a session late: the fee is shown first, "Keep it" changes nothing, the
  cancel charges exactly that fee and releases the rest of the hold; the client saves
  the email its confirmations and reminders go to (a bad address refused in words).
- A therapist sets its weekly hours and a day off in the console's Availability section
  (the warning under 1 hour a week, the week calendar); a client books the next slot;
  both join the booked call (the client from /talk's "Your bookings", the therapist from
  the console's Bookings section) and talk; once the start has passed the therapist marks
  it "took place" from the Bookings section: the price is charged, the hold gone.
- After a quick-connect call the therapist books a weekly follow-up for that client from
  the "call has ended" panel; the Bookings section lists it and the call's notes due;
  an operator books on the client's behalf from /ops.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import zoneinfo
from typing import Any, Final

import pytest
from playwright.async_api import expect
from test_forms import FORM_ANSWERS

from .conftest import Person, Stage
from .test_access import assert_fits, tab_to
from .test_call import ALPHA, meet

pytestmark = pytest.mark.integration

THERAPIST: Final = ("therapist", "t-alpha")
OPERATOR: Final = ("operator", "op-browser")
DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NARROW: Final = {"width": 360, "height": 780}
#: Zones spread round the clock: one of them is always in the middle of its day.
ZONES: Final = (
    "Pacific/Auckland",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Pacific/Honolulu",
)


async def press(person: Person, test_id: str, *, backwards: bool = False) -> None:
    """Reach ``test_id`` by Tab (Shift+Tab) and press Enter on it."""
    await tab_to(person, test_id, backwards=backwards)
    await person.page.keyboard.press("Enter")


def midday_zone() -> tuple[str, dt.datetime]:
    """A zone whose wall clock is between 07:00 and 17:00 now, and that wall clock."""
    for name in ZONES:
        local = dt.datetime.now(zoneinfo.ZoneInfo(name))
        if 7 <= local.hour < 17:
            return name, local
    raise AssertionError("no zone of ZONES is in the middle of its day")  # cannot happen


async def all_week(stage: Stage, tz: str = "Europe/London") -> None:
    """t-alpha is open every day, all day (so a slot within 24 h always exists)."""
    body = {
        "timezone": tz,
        "weekly": [{"day": d, "start": "00:00", "end": "23:30"} for d in DAYS],
        "overrides": [],
    }
    await stage.api("PUT", "/v1/therapists/t-alpha/availability", THERAPIST, body)


async def fill_forms(stage: Stage, client_id: str) -> None:
    """The client fills its care forms (PROTOCOL.md §10), as it must before a
    session is booked for it; tests/browser/test_forms.py does it on the page."""
    for name, answers in FORM_ANSWERS.items():
        await stage.api("PUT", f"/v1/me/forms/{name}", ("client", client_id), answers)


async def bookings_of(stage: Stage, client_id: str) -> list[dict[str, Any]]:
    data = await stage.api("GET", "/v1/bookings", ("client", client_id))
    return sorted(data["bookings"], key=lambda b: str(b["start"]))


async def wallet_of(stage: Stage, client_id: str) -> dict[str, Any]:
    wallet: dict[str, Any] = await stage.api("GET", "/v1/wallet", ("client", client_id))
    return wallet


@pytest.mark.timeout(180)
async def test_a_client_books_an_intro_and_a_weekly_series_and_cancels_late(
    stage: Stage,
) -> None:
    (a,) = await stage.start(1)
    await stage.therapist("t-alpha", ALPHA)
    await all_week(stage)
    await stage.fund("c-ivy", amount_minor=50_000)
    await fill_forms(stage, "c-ivy")

    # The directory: the therapist who shares the topic, with its next open time.
    finder = await stage.open(
        "client", a, "/find", role="client", sub="c-ivy", name="Ivy Client", phone=True
    )
    await finder.page.set_viewport_size(NARROW)
    await finder.tid("find-topic-anxiety").check()
    await press(finder, "find-submit")
    found = finder.tid("find-therapist")
    await expect(found).to_have_count(1)
    await expect(found).to_have_attribute("data-therapist-id", "t-alpha")
    await expect(found).to_contain_text(ALPHA)
    await expect(found).to_contain_text("Next open time")
    await expect(found).to_contain_text("£60.00")
    await assert_fits(finder, "directory at 360 px")
    await finder.shot("directory")
    await finder.tid("find-book").click()
    await finder.page.wait_for_url(re.compile(r"/book/t-alpha$"))
    client = finder

    # The booking page: the therapist, the open times, the terms before "Confirm".
    await expect(client.tid("book-therapist-name")).to_have_text(ALPHA)
    await expect(client.tid("slot").first).to_be_visible()
    await expect(client.tid("book-policy")).to_contain_text("24 hours")
    await expect(client.tid("book-policy")).to_contain_text("£60.00")
    await expect(client.tid("book-wallet")).to_contain_text("£500.00 to spend")
    await assert_fits(client, "booking page at 360 px")

    # The free intro, by keyboard: the type, the first time, "Confirm".
    await tab_to(client, "book-type-session")  # the group's checked radio takes the Tab
    await client.page.keyboard.press("ArrowLeft")
    await expect(client.tid("book-type-intro")).to_be_checked()
    await expect(client.tid("book-policy")).to_contain_text("This introduction is free")
    await expect(client.tid("slot").first).to_be_visible()
    await tab_to(client, "slot")
    await client.page.keyboard.press("Space")
    await expect(client.tid("book-summary")).to_contain_text("A free introduction on")
    await press(client, "book-confirm")
    result = client.tid("book-result")
    await expect(result).to_contain_text("Booked for")
    await expect(result).to_be_focused()
    items = client.tid("booking")
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("Free introduction")
    await expect(items.first).to_contain_text(ALPHA)
    await expect(items.first.get_by_test_id("booking-state")).to_have_text("Booked")
    await client.shot("intro-booked")
    [intro] = await bookings_of(stage, "c-ivy")
    assert (intro["type"], intro["state"], intro["price_minor"]) == ("intro", "scheduled", 0)

    # A second intro is refused in words.
    await client.tid("slot").first.check()
    await client.tid("book-confirm").click()
    await expect(result).to_contain_text("already had your free introduction")

    # A weekly series of 3 sessions: the terms and the money held said before "Confirm".
    await client.tid("book-type-session").check()
    await expect(client.tid("book-repeat")).to_be_visible()
    first = client.tid("slot").first
    await expect(first).to_be_visible()
    start = await first.get_attribute("data-start")
    await first.check()
    await client.tid("book-repeat").check()
    await client.tid("book-weeks").fill("3")
    summary = client.tid("book-summary")
    await expect(summary).to_contain_text("3 weekly sessions, the first on")
    await expect(summary).to_contain_text("£180.00 will be held in the wallet")
    policy = client.tid("book-policy")
    await expect(policy).to_contain_text("Cancel at least 24 hours before the start")
    await expect(policy).to_contain_text("£60.00 is charged (100% of the price)")
    await press(client, "book-confirm")
    await expect(result).to_contain_text("Booked: 3 weekly sessions")
    await expect(items).to_have_count(4)
    await assert_fits(client, "booked series at 360 px")
    await client.shot("series-booked")
    sessions = [b for b in await bookings_of(stage, "c-ivy") if b["type"] == "session"]
    assert len(sessions) == 3
    assert len({b["series_id"] for b in sessions}) == 1 and sessions[0]["series_id"]
    assert sessions[0]["start"].replace("+00:00", "Z") == str(start).replace("+00:00", "Z")
    wallet = await wallet_of(stage, "c-ivy")
    assert (wallet["balance_minor"], wallet["held_minor"]) == (50_000, 18_000)
    await client.page.reload()
    await expect(client.tid("book-wallet")).to_contain_text("£180.00 held")

    # A late cancel (the first session starts within 24 h): the fee is shown first.
    first_session = client.page.locator(
        f'[data-testid="booking"][data-booking-id="{sessions[0]["id"]}"]'
    )
    await expect(first_session).to_be_visible()
    await first_session.get_by_test_id("booking-cancel").focus()
    await client.page.keyboard.press("Enter")
    terms = first_session.get_by_test_id("cancel-terms")
    await expect(terms).to_have_text(
        "It is less than 24 hours before the start: cancelling now costs £60.00."
    )
    await expect(first_session.get_by_test_id("booking-cancel-confirm")).to_be_focused()
    await assert_fits(client, "cancel terms at 360 px")
    await client.shot("late-cancel-terms")
    await first_session.get_by_test_id("booking-cancel-keep").click()
    await expect(terms).to_have_count(0)
    await expect(first_session.get_by_test_id("booking-cancel")).to_be_focused()
    assert (await wallet_of(stage, "c-ivy"))["held_minor"] == 18_000  # nothing changed
    await client.page.keyboard.press("Enter")
    await client.page.keyboard.press("Enter")  # "Yes, cancel" has the focus
    state = first_session.get_by_test_id("booking-state")
    await expect(state).to_have_text("Cancelled late, with a fee")
    await expect(first_session).to_contain_text("Charged £60.00")
    await expect(first_session.get_by_test_id("booking-status")).to_have_text(
        "The booking is cancelled."
    )
    await client.shot("late-cancelled")
    wallet = await wallet_of(stage, "c-ivy")
    assert (wallet["balance_minor"], wallet["held_minor"]) == (44_000, 12_000)

    # The intro's cancel costs nothing, and says so first.
    intro_item = client.page.locator(f'[data-testid="booking"][data-booking-id="{intro["id"]}"]')
    await intro_item.get_by_test_id("booking-cancel").click()
    await expect(intro_item.get_by_test_id("cancel-terms")).to_have_text(
        "Cancelling now costs you nothing."
    )
    await intro_item.get_by_test_id("booking-cancel-confirm").click()
    # Inside the window it is a late cancel all the same, with no fee to charge.
    await expect(intro_item.get_by_test_id("booking-state")).to_have_text(
        re.compile(r"^Cancelled( late, no fee)?$")
    )
    assert (await wallet_of(stage, "c-ivy"))["balance_minor"] == 44_000
    check = await stage.api("GET", "/v1/ledger/check", OPERATOR)
    assert check["balanced"] is True, check

    # The email for confirmations and reminders, by keyboard: refused in words, then saved.
    contact_status = client.tid("contact-status")
    await expect(contact_status).to_have_text(
        "No email saved: confirmations and reminders are not emailed."
    )
    await tab_to(client, "contact-email", backwards=True)  # above the list of bookings
    await client.page.keyboard.type("ivy-at-example")
    await client.page.keyboard.press("Enter")
    await expect(client.tid("contact-error")).to_have_text(
        "Enter an email address like name@example.com, or leave the field empty."
    )
    await expect(client.tid("contact-email")).to_be_focused()
    await expect(client.tid("contact-email")).to_have_attribute("aria-invalid", "true")
    await client.tid("contact-email").fill("ivy@example.org")
    await press(client, "contact-save")
    await expect(contact_status).to_have_text(
        "Saved. Confirmations and reminders will be emailed to this address."
    )
    await expect(client.tid("contact-error")).to_be_hidden()
    await assert_fits(client, "booking emails at 360 px")
    await client.shot("contact-email-saved")
    saved = await stage.api("GET", "/v1/me/contact", ("client", "c-ivy"))
    assert saved == {"email": "ivy@example.org"}
    await client.page.reload()
    await expect(client.tid("contact-email")).to_have_value("ivy@example.org")
    stage.assert_no_page_errors()


@pytest.mark.timeout(240)
async def test_a_therapist_sets_its_hours_and_both_join_the_booked_call(stage: Stage) -> None:
    tz, local = midday_zone()
    today = DAYS[local.weekday()]
    # No notice and a slot every minute: the next slot starts within a minute.
    (a,) = await stage.start(1, booking_min_notice_h=0, slot_step_min=1, session_minutes=30)
    await stage.therapist("t-alpha", ALPHA)
    await stage.fund("c-jo", amount_minor=20_000)
    await fill_forms(stage, "c-jo")

    # The console's Availability section, by keyboard: nothing set, the warning shows.
    alpha = await stage.console("t-alpha", a, "t-alpha")
    await expect(alpha.tid("availability-open")).to_be_visible()
    await press(alpha, "availability-open", backwards=True)
    await expect(alpha.tid("availability-view")).to_be_visible()
    await expect(alpha.page.locator("#availability-title")).to_be_focused()
    await expect(alpha.tid("avail-warning")).to_be_visible()
    await alpha.tid("avail-timezone").fill(tz)

    # Today's hours: all day long (so the next slot is minutes away); a day off next week.
    await press(alpha, f"avail-add-{today}")
    day = alpha.page.locator(f'[data-testid="avail-day"][data-day="{today}"]')
    window = day.get_by_test_id("avail-window")
    await expect(window).to_have_count(1)
    await expect(window.get_by_test_id("avail-from")).to_be_focused()
    await window.get_by_test_id("avail-from").fill("00:00")
    await window.get_by_test_id("avail-to").fill("23:55")
    await expect(alpha.tid("avail-hours")).to_contain_text("23.9 hours a week")
    await expect(alpha.tid("avail-warning")).to_be_hidden()
    day_off = (local.date() + dt.timedelta(days=8)).isoformat()
    await press(alpha, "avail-add-override")
    override = alpha.tid("avail-override")
    await expect(override).to_have_count(1)
    await override.get_by_test_id("avail-override-date").fill(day_off)
    await press(alpha, "avail-save")
    await expect(alpha.tid("avail-status")).to_contain_text("saved")
    stored = await stage.api("GET", "/v1/therapists/t-alpha/availability", THERAPIST)
    assert stored["timezone"] == tz
    assert stored["weekly"] == [{"day": today, "start": "00:00", "end": "23:55"}]
    assert stored["overrides"] == [{"date": day_off, "slots": []}]
    cal_today = alpha.page.locator(f'[data-testid="cal-day"][data-day="{local.date()}"]')
    await expect(cal_today.get_by_test_id("cal-open")).to_have_text("Open 00:00\u201323:55")
    await alpha.page.set_viewport_size(NARROW)
    await assert_fits(alpha, "availability at 360 px")
    await alpha.shot("availability")
    await alpha.page.set_viewport_size({"width": 1280, "height": 800})

    # The client books the next slot (minutes away) and joins from /talk.
    slots = await stage.api("GET", "/v1/therapists/t-alpha/slots?type=session", ("client", "c-jo"))
    start = slots["slots"][0]["start"]
    made = await stage.api(
        "POST",
        "/v1/bookings",
        ("client", "c-jo"),
        {"therapist_id": "t-alpha", "type": "session", "start": start},
    )
    booking_id = made["bookings"][0]["id"]
    client = await stage.talk("client", a, "c-jo", name="Jo Client")
    mine = client.page.locator(f'[data-testid="booking"][data-booking-id="{booking_id}"]')
    await expect(mine).to_be_visible()
    await expect(mine).to_contain_text(ALPHA)
    await client.page.set_viewport_size(NARROW)
    await assert_fits(client, "talk page with a booking at 360 px")
    await mine.get_by_test_id("booking-join").click()
    await expect(client.tid("call-view")).to_be_visible()

    # The therapist joins from the Bookings section.
    await press(alpha, "bookings-open", backwards=True)
    await expect(alpha.tid("bookings-view")).to_be_visible()
    theirs = alpha.page.locator(f'[data-testid="booking"][data-booking-id="{booking_id}"]')
    await expect(theirs).to_contain_text("Session with")
    await alpha.shot("bookings")
    await theirs.get_by_test_id("booking-join").click()
    await expect(alpha.tid("call-view")).to_be_visible()
    await client.chat("Hello from the booked call")
    await expect(alpha.chat_message("Hello from the booked call")).to_have_count(1)
    await alpha.chat("Hello Jo")
    await expect(client.chat_message("Hello Jo")).to_have_count(1)
    await alpha.shot("in-booked-call")

    # Once the start has passed, the therapist says it took place, from inside the call.
    starts_at = dt.datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
    await asyncio.sleep(max(0.0, starts_at + 1 - time.time()))
    await alpha.tid("bookings-open").click()
    await expect(theirs.get_by_test_id("booking-occurred")).to_be_visible()
    await theirs.get_by_test_id("booking-occurred").focus()
    await alpha.page.keyboard.press("Enter")
    await expect(theirs.get_by_test_id("booking-state")).to_have_text("Took place")
    await expect(theirs.get_by_test_id("booking-status")).to_have_text("Marked as taken place.")
    [b] = await bookings_of(stage, "c-jo")
    assert (b["state"], b["fee_minor"]) == ("occurred", 6000), b
    await alpha.tid("bookings-view").get_by_role("button", name="Back to the call").click()
    await expect(alpha.tid("call-view")).to_be_visible()
    await alpha.tid("end-call").click()
    await expect(alpha.tid("call-ended")).to_be_visible()
    await expect(client.tid("end-message")).to_be_visible()
    wallet = await wallet_of(stage, "c-jo")
    assert (wallet["balance_minor"], wallet["held_minor"]) == (14_000, 0), wallet
    stage.assert_no_page_errors()


@pytest.mark.timeout(240)
async def test_a_follow_up_from_the_end_of_a_quick_call_and_an_operator_booking(
    stage: Stage,
) -> None:
    (a,) = await stage.start(1)
    alpha, client = await meet(stage, a, a, "c-kim", "Kim Client")
    await all_week(stage)
    await fill_forms(stage, "c-kim")
    await expect(alpha.tid("call-timer")).to_be_visible()  # live: both joined
    await client.chat("Hello")
    await expect(alpha.chat_message("Hello")).to_have_count(1)
    await client.tid("end-call").click()
    ended = alpha.tid("call-ended")
    await expect(ended).to_be_visible()

    # "Book a follow-up": the therapist's own open times, weekly for 2 weeks, by keyboard.
    await expect(alpha.tid("followup-open")).to_be_visible()
    await press(alpha, "followup-open")
    await expect(alpha.tid("followup")).to_be_visible()
    await expect(alpha.tid("followup").get_by_test_id("slot").first).to_be_focused()
    await alpha.page.keyboard.press("Space")
    start = await alpha.tid("followup").get_by_test_id("slot").first.get_attribute("data-start")
    await tab_to(alpha, "followup-repeat")
    await alpha.page.keyboard.press("Space")
    await alpha.tid("followup-weeks").fill("2")
    await press(alpha, "followup-confirm")
    await expect(alpha.tid("followup-result")).to_contain_text(
        "Follow-up booked: 2 weekly sessions"
    )
    await alpha.page.set_viewport_size(NARROW)
    await assert_fits(alpha, "follow-up at 360 px")
    await alpha.shot("follow-up")
    await alpha.page.set_viewport_size({"width": 1280, "height": 800})
    booked = await bookings_of(stage, "c-kim")
    assert [(b["type"], b["created_by"]) for b in booked] == [("session", "t-alpha")] * 2
    assert booked[0]["start"].replace("+00:00", "Z") == str(start).replace("+00:00", "Z")

    # The Bookings section lists them, and the quick call's notes due; "Write notes".
    await press(alpha, "bookings-open", backwards=True)
    await expect(alpha.tid("booking")).to_have_count(2)
    await expect(alpha.tid("booking").first).to_contain_text("Kim")
    due = alpha.tid("note-due")
    await expect(due).to_have_count(1)
    await expect(due).to_contain_text("Call with Kim")
    await expect(due).to_contain_text("Notes due by")
    await alpha.page.set_viewport_size(NARROW)
    await assert_fits(alpha, "bookings at 360 px")
    await alpha.shot("bookings-and-notes-due")
    await alpha.page.set_viewport_size({"width": 1280, "height": 800})
    await due.get_by_test_id("note-due-write").click()
    await expect(alpha.tid("calllog-detail")).to_be_visible()

    # An operator books an intro on Kim's behalf, from /ops through the booking page.
    ops = await stage.ops("operator", a)
    await expect(ops.tid("ops-unmarked-empty")).to_be_visible()
    await assert_fits(ops, "dashboard with the bookings part")
    await ops.tid("ops-book-client").fill("c-kim")
    await ops.tid("ops-book-therapist").fill("t-alpha")
    await ops.tid("ops-book-go").click()
    await ops.page.wait_for_url(re.compile(r"/book/t-alpha\?client=c-kim$"))
    await expect(ops.tid("book-client-id")).to_have_value("c-kim")
    await expect(ops.tid("booking")).to_have_count(2)
    await ops.tid("book-type-intro").check()
    await ops.tid("slot").first.check()
    await ops.tid("book-confirm").click()
    await expect(ops.tid("book-result")).to_contain_text("Booked for")
    await expect(ops.tid("booking")).to_have_count(3)
    await assert_fits(ops, "operator booking page")
    await ops.shot("operator-booked")
    intros = [b for b in await bookings_of(stage, "c-kim") if b["type"] == "intro"]
    assert [b["created_by"] for b in intros] == ["op-browser"]
    stage.assert_no_page_errors()
