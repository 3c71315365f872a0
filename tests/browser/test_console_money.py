"""The therapist's console after a call (issue #13), in a real browser: the end screen,
the call log and the earnings, each reached and used by keyboard, and at 360 px.

One real short call (price 150 a minute, the therapist's share 60 %: one started minute
earns 90 pence), the client hangs up, and then:

- the end screen says in words how it ended, how long it lasted and what it earned
  (no underscore codes such as ``ended_by_client``);
- the call log lists the session with the client's first name only, its date, duration
  and earnings; the session opens its chat transcript and the in-call note; a note
  added after the call is refused while empty, then saved (as text, never HTML),
  listed, and kept on the server;
- the earnings show the share as available, the earning in the ledger, the amount
  field holding all that is available; amounts it cannot take are refused in words;
  a withdrawal made from the page shows "Waiting for your invoice", then (after the
  operator's steps) "Scheduled: paid on <Friday ...>" and "Paid".
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import pytest
from playwright.async_api import expect

from .conftest import Person, Stage
from .test_access import assert_fits, tab_to
from .test_call import meet

pytestmark = pytest.mark.integration

CLIENT_NAME: Final = "Sam Client"
THERAPIST: Final = ("therapist", "t-alpha")
OPERATOR: Final = ("operator", "op-browser")


async def press(person: Person, test_id: str, *, backwards: bool = False) -> None:
    """Reach ``test_id`` by Tab (Shift+Tab: up to the header) and press Enter on it."""
    await tab_to(person, test_id, backwards=backwards)
    await person.page.keyboard.press("Enter")


def payout_words(payout_date: str) -> str:
    """A payout date as the page says it: "Friday 18 December" (the year if not this one)."""
    day = dt.date.fromisoformat(payout_date)
    words = f"{day:%A} {day.day} {day:%B}"
    return words if day.year == dt.date.today().year else f"{words} {day.year}"


@pytest.mark.timeout(180)
async def test_after_a_call_the_console_tells_the_end_the_log_and_the_money(
    stage: Stage,
) -> None:
    (a,) = await stage.start(1, price_per_minute_minor=150, therapist_share_pct=60)
    alpha, client = await meet(stage, a, a, "c-sam", CLIENT_NAME)
    await expect(alpha.tid("call-timer")).to_be_visible()  # live: both joined, billed
    await client.chat("Hello from Sam")
    await expect(alpha.chat_message("Hello from Sam")).to_have_count(1)
    await alpha.chat("Hello Sam")
    await expect(client.chat_message("Hello Sam")).to_have_count(1)
    in_call = "In-call note: sleeps badly."
    await alpha.tid("notes-input").fill(in_call)
    await expect(alpha.tid("notes-saved")).to_be_visible()
    session_id = (await stage.api("GET", "/v1/sessions", THERAPIST))["sessions"][0]["id"]

    # The client hangs up: the end screen says it in words, with duration and earnings.
    await client.tid("end-call").click()
    ended = alpha.tid("call-ended")
    await expect(ended).to_be_visible()
    await expect(ended).to_contain_text("The client ended the call")
    await expect(ended).to_contain_text(re.compile(r"Duration: \d+ s"))
    await expect(alpha.tid("ended-earned")).to_have_text("You earned £0.90 from this call.")
    text = await ended.inner_text()
    assert not re.search(r"[a-z]_[a-z]", text), text
    await alpha.shot("ended")

    # The call log, by keyboard: the session with the client's first name only.
    await press(alpha, "calllog-open", backwards=True)
    await expect(alpha.tid("calllog-view")).to_be_visible()
    await expect(alpha.page.locator("#calllog-title")).to_be_focused()
    item = alpha.tid("calllog-item")
    await expect(item).to_have_count(1)
    await expect(item).to_have_attribute("data-session-id", session_id)
    await expect(item.locator(".qc-log-name")).to_have_text("Sam")
    await expect(item).not_to_contain_text(CLIENT_NAME)
    await expect(item).to_contain_text(re.compile(r"\d+ s"))
    await expect(item).to_contain_text("£0.90")
    await alpha.shot("calllog")

    # The session: its chat, the in-call note; then a note after the call.
    await press(alpha, "calllog-item")
    detail = alpha.tid("calllog-detail")
    await expect(detail).to_be_visible()
    await expect(alpha.page.locator("#calllog-detail-title")).to_be_focused()
    await expect(alpha.page.locator("#calllog-detail-title")).to_have_text("Call with Sam")
    await expect(detail).to_contain_text("The client ended the call")
    messages = alpha.tid("calllog-message")
    await expect(messages).to_have_count(2)
    await expect(messages.nth(0)).to_contain_text("Sam")
    await expect(messages.nth(0)).to_contain_text("Hello from Sam")
    await expect(messages.nth(1)).to_contain_text("You")
    await expect(messages.nth(1)).to_contain_text("Hello Sam")
    notes = alpha.tid("calllog-note")
    await expect(notes).to_have_count(1)
    await expect(notes.nth(0)).to_contain_text(in_call)

    await press(alpha, "calllog-note-save")  # empty: refused in words, nothing sent
    await expect(alpha.tid("calllog-note-error")).to_contain_text("Write something first")
    await expect(alpha.tid("calllog-note-input")).to_be_focused()
    await expect(alpha.tid("calllog-note-input")).to_have_attribute("aria-invalid", "true")
    after = "After the call: <b>book</b> a follow-up."
    await alpha.page.keyboard.type(after)
    await expect(alpha.tid("calllog-note-error")).to_be_hidden()
    await press(alpha, "calllog-note-save")
    await expect(alpha.tid("calllog-note-status")).to_contain_text("Note saved")
    await expect(notes).to_have_count(2)
    await expect(notes.nth(1).locator(".qc-log-note-text")).to_have_text(after)  # text, not HTML
    await expect(alpha.tid("calllog-note-input")).to_have_value("")
    await alpha.shot("calllog-detail")
    stored = await stage.api("GET", f"/v1/sessions/{session_id}/notes", THERAPIST)
    assert [n["text"] for n in stored["notes"]][-1] == after

    # Back to the list (focus returns to the session), and out of the call log.
    await alpha.tid("calllog-back-to-list").click()
    await expect(item).to_be_focused()

    # Earnings: the share is available and in the ledger; the field holds all of it.
    await press(alpha, "earnings-open", backwards=True)
    view = alpha.tid("earnings-view")
    await expect(view).to_be_visible()
    await expect(alpha.page.locator("#earnings-title")).to_be_focused()
    await expect(alpha.tid("earnings-available")).to_have_text("£0.90")
    await expect(alpha.tid("earnings-withdrawing")).to_have_text("£0.00")
    await expect(alpha.tid("earnings-paid")).to_have_text("£0.00")
    entry = alpha.tid("transaction-item")
    await expect(entry).to_have_count(1)
    await expect(entry).to_have_attribute("data-kind", "earning")
    await expect(entry).to_contain_text("Earning from a session")
    await expect(entry).to_contain_text("+£0.90")
    amount = alpha.tid("withdraw-amount")
    await expect(amount).to_have_value("0.90")
    await alpha.shot("earnings")

    # Amounts it cannot take, refused in words beside the field.
    for typed, words in (("abc", "numbers only"), ("12,50", "with a point"), ("5", "£0.90")):
        await amount.fill(typed)
        await alpha.tid("withdraw-submit").click()
        await expect(alpha.tid("withdraw-error")).to_contain_text(words)
        await expect(amount).to_have_attribute("aria-invalid", "true")
        await expect(amount).to_be_focused()
    assert (await stage.api("GET", "/v1/withdrawals", THERAPIST))["withdrawals"] == []

    # Reopened, the field holds all that is available again; withdraw it by keyboard.
    await view.get_by_role("button", name="Back to the requests").click()
    await expect(view).to_be_hidden()
    await expect(alpha.tid("earnings-open")).to_be_focused()
    await alpha.page.keyboard.press("Enter")
    await expect(amount).to_have_value("0.90")
    await press(alpha, "withdraw-submit")
    await expect(alpha.tid("withdraw-status")).to_contain_text("You asked to withdraw £0.90")
    state = alpha.tid("withdrawal-state")
    await expect(state).to_have_text("Waiting for your invoice")
    await expect(alpha.tid("withdrawal-payout")).to_contain_text("when your invoice arrives")
    await expect(alpha.tid("earnings-available")).to_have_text("£0.00")
    await expect(alpha.tid("earnings-withdrawing")).to_have_text("£0.90")
    await expect(alpha.tid("withdraw-none")).to_be_visible()
    await expect(alpha.tid("withdraw-form")).to_be_hidden()
    await expect(entry).to_have_count(2)
    await expect(entry.nth(0)).to_contain_text("-£0.90")
    await alpha.shot("withdrawn")
    listed = (await stage.api("GET", "/v1/withdrawals", THERAPIST))["withdrawals"]
    assert [(w["amount_minor"], w["state"]) for w in listed] == [(90, "awaiting_invoice")]

    # The operator's steps: the invoice came in, then the payout went out.
    wid = listed[0]["id"]
    invoiced = await stage.api("POST", f"/v1/withdrawals/{wid}/invoice", OPERATOR)
    day = payout_words(invoiced["withdrawal"]["payout_date"])
    await alpha.tid("earnings-open").click()  # pressed again: reloads
    await expect(state).to_have_text(f"Scheduled: paid on {day}")
    await expect(alpha.tid("withdrawal-payout")).to_have_text(f"Payout date: {day}")
    await stage.api("POST", f"/v1/withdrawals/{wid}/paid", OPERATOR)
    await alpha.tid("earnings-open").click()
    await expect(state).to_have_text("Paid")
    await expect(alpha.tid("earnings-paid")).to_have_text("£0.90")
    await expect(alpha.tid("earnings-withdrawing")).to_have_text("£0.00")

    # At 360 px: the earnings, then the call log's session, fit and have contrast.
    await alpha.page.set_viewport_size({"width": 360, "height": 780})
    await assert_fits(alpha, "earnings at 360 px")
    await alpha.shot("earnings-narrow")
    await alpha.tid("calllog-open").click()
    await alpha.tid("calllog-item").click()
    await expect(notes).to_have_count(2)  # kept on the server
    await assert_fits(alpha, "call log at 360 px")
    await alpha.shot("calllog-narrow")
    await alpha.tid("calllog-view").get_by_role("button", name="Back to the requests").click()
    await expect(alpha.tid("calllog-view")).to_be_hidden()
    await expect(alpha.tid("calllog-open")).to_be_focused()
    stage.assert_no_page_errors()
