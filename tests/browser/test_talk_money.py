"""The client's money on /talk (issue #13), in a real browser at 360 px wide.

A client with nothing in its wallet (price 150 a minute, ten minutes to start):

- sees the price and its balance before "talk now", and the top-up picker, open;
- types its request and presses "talk now": the 402 leads to the picker, not a dead end;
- pays £20.00 on the server's own test payment page (``--dev``: test payments) and
  comes back to its form with what it typed kept, "Your top-up of £20.00 arrived" and
  the new balance; the top-up is in its transactions, with a receipt;
- asks again: the offer card shows the price; in the call the running time and cost
  show, and the microphone and camera controls (on both pages) turn the tracks off and
  on with ``aria-pressed``; a lost connection says so, and stops saying so once back;
- hangs up: the end screen says in words why it ended, how long it lasted, what it
  cost (£1.50, one started minute) and what is left (£18.50); the past sessions list
  it, with the therapist's name and cost, and it opens its chat transcript.
"""

from __future__ import annotations

import asyncio
import re
from typing import Final

import pytest
from playwright.async_api import expect

from .conftest import Person, Stage
from .test_access import assert_fits, press_on

pytestmark = pytest.mark.integration

ALPHA: Final = "Dr Alpha Browser"
CLIENT: Final = "c-penny"
NOTES: Final = "Kept while I paid: exams and sleep."
NARROW: Final = {"width": 360, "height": 780}

_TRACK_JS: Final = """
(kind) => {
  const s = window.qcCall && window.qcCall.localStream;
  const t = s && (kind === "audio" ? s.getAudioTracks() : s.getVideoTracks())[0];
  return t ? t.enabled : null;
}
"""


async def toggles_track(person: Person, test_id: str, kind: str) -> None:
    """The control turns the ``kind`` track off (aria-pressed) and on again."""
    button = person.tid(test_id)
    await expect(button).to_be_enabled()
    await expect(button).to_have_attribute("aria-pressed", "false")
    assert await person.page.evaluate(_TRACK_JS, kind) is True
    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "true")
    assert await person.page.evaluate(_TRACK_JS, kind) is False
    await expect(person.tid("media-state")).to_be_visible()
    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "false")
    assert await person.page.evaluate(_TRACK_JS, kind) is True
    await expect(person.tid("media-state")).to_be_hidden()


@pytest.mark.timeout(240)
async def test_a_client_tops_up_talks_and_sees_what_it_cost(stage: Stage) -> None:
    (a,) = await stage.start(1, price_per_minute_minor=150, min_balance_minutes=10)
    await stage.therapist("t-alpha", ALPHA)
    client = await stage.talk("client", a, CLIENT, name="Penny Client")
    await client.page.set_viewport_size(NARROW)

    # Before "talk now": the price and the (empty) balance, and the picker, open.
    line = client.tid("wallet-line")
    await expect(line).to_have_text("£1.50 a minute · your balance £0.00 (about 0 minutes)")
    await expect(client.tid("wallet-short")).to_contain_text("at least £15.00")
    await expect(client.tid("topup-form")).to_be_visible()
    await expect(client.tid("history")).to_be_visible()
    await assert_fits(client, "form, nothing in the wallet")
    await client.shot("empty-wallet")

    # "Talk now" anyway: the 402 leads to the picker, with the form's text kept.
    await client.ask(topics=("anxiety",), notes=NOTES)
    await expect(client.tid("wallet-short")).to_contain_text("Not enough credit")
    await expect(client.tid("waiting-screen")).to_be_hidden()
    checked = client.page.locator('#topup input[name="topup-amount"]:checked')
    await expect(checked).to_be_focused()

    # £20.00, paid on the test payment page; back to the form as it was.
    await client.page.locator('[data-testid="topup-amount"][data-amount="2000"]').check()
    await expect(client.tid("topup-pay")).to_have_text("Pay £20.00")
    await client.tid("topup-pay").click()
    await client.page.wait_for_url(re.compile(r"/dev/checkout/"))
    await client.shot("test-payment-page")
    await client.page.get_by_role("button", name=re.compile(r"^pay", re.I)).click()
    await client.page.wait_for_url(re.compile(r"/talk"))
    result = client.tid("topup-result")
    await expect(result).to_have_text("Your top-up of £20.00 arrived.", timeout=20_000)
    await expect(line).to_have_text("£1.50 a minute · your balance £20.00 (about 13 minutes)")
    await expect(client.tid("wallet-short")).to_be_hidden()
    await expect(client.tid("notes-input")).to_have_value(NOTES)
    await expect(client.tid("topic-anxiety")).to_be_checked()
    assert "topup=" not in client.page.url  # a reload does not tell it again
    topup = client.tid("transaction").and_(client.page.locator('[data-kind="topup"]'))
    await expect(topup).to_have_count(1)
    await expect(topup).to_contain_text("+£20.00")
    await topup.get_by_test_id("show-receipt").click()
    await expect(topup.get_by_test_id("receipt")).to_contain_text("£20.00")
    await assert_fits(client, "back from the payment")
    await client.shot("topped-up")

    # Asked again: the card shows the price; the call shows its time and cost.
    alpha = await stage.console("t-alpha", a, "t-alpha")
    await alpha.go_available()
    await client.tid("talk-now").click()
    await expect(alpha.tid("request-item")).to_have_count(1)
    await alpha.tid("request-item").get_by_test_id("accept-button").click()
    await expect(client.tid("therapist-card")).to_be_visible()
    await expect(client.tid("offer-price")).to_contain_text("£1.50 a minute")
    await client.tid("terms-checkbox").check()
    await client.tid("accept-offer").click()
    await asyncio.gather(alpha.wait_video(), client.wait_video())
    await expect(client.tid("call-meter")).to_contain_text("about £1.50 so far")
    await expect(client.page.locator("#call-meter-note")).to_contain_text("estimate")
    # The draft went with the request.
    assert await client.page.evaluate("sessionStorage.getItem('qc.talk.draft')") is None

    # The controls, on both pages; by keyboard on the client's.
    await toggles_track(client, "mic-toggle", "audio")
    await toggles_track(client, "camera-toggle", "video")
    await toggles_track(alpha, "mic-toggle", "audio")
    await toggles_track(alpha, "camera-toggle", "video")
    await press_on(client, "mic-toggle", "Space", backwards=True)
    await expect(client.tid("mic-toggle")).to_have_attribute("aria-pressed", "true")
    await expect(client.tid("media-state")).to_have_text("Your microphone is muted.")
    await assert_fits(client, "in the call, muted")
    await client.shot("muted")
    await client.tid("mic-toggle").press("Space")
    await expect(client.tid("mic-toggle")).to_have_attribute("aria-pressed", "false")

    # The connection drops, and comes back: the page says so, then stops.
    await client.context.set_offline(True)
    await client.page.evaluate("window.qcConn.drop()")
    lost = client.tid("connection-lost")
    await expect(lost).to_have_text("Connection lost — reconnecting…")
    await client.shot("connection-lost")
    await client.context.set_offline(False)
    await expect(client.tid("status-line")).to_have_attribute("data-state", "open")
    await expect(lost).to_be_hidden()

    await client.chat("A line for the transcript")
    await expect(alpha.chat_message("A line for the transcript")).to_have_count(1)
    await alpha.chat("And a reply")
    await expect(client.chat_message("And a reply")).to_have_count(1)

    # The end: in words, how long, what it cost and what is left.
    await client.tid("end-call").click()
    await expect(client.tid("end-message")).to_have_text("You ended the call.")
    await expect(client.tid("end-duration")).to_have_text(re.compile(r"^\d+ (min \d+ )?s$"))
    await expect(client.tid("end-charge")).to_have_text("£1.50", timeout=15_000)
    await expect(client.tid("end-balance")).to_have_text("£18.50")
    await expect(client.tid("end-topup")).to_be_hidden()
    await expect(client.page.locator("#view-end")).not_to_contain_text("ended_by")

    # The past sessions list it, and it opens its transcript (as text).
    item = client.tid("past-session").first
    await expect(item).to_contain_text(ALPHA)
    await expect(item).to_contain_text("£1.50")
    await expect(item).to_contain_text("You ended the call.")
    await item.get_by_test_id("show-transcript").click()
    messages = item.get_by_test_id("transcript-message")
    await expect(messages).to_have_count(2)
    await expect(messages.nth(0)).to_contain_text("A line for the transcript")
    await expect(messages.nth(1)).to_contain_text(ALPHA)
    await expect(messages.nth(1)).to_contain_text("And a reply")
    charge = client.tid("transaction").and_(client.page.locator('[data-kind="session_charge"]'))
    await expect(charge).to_contain_text("\N{MINUS SIGN}£1.50")
    await assert_fits(client, "the end, with the past sessions")
    await client.shot("ended")

    wallet = await stage.api("GET", "/v1/wallet", ("client", CLIENT))
    assert wallet["balance_minor"] == 1850
    stage.assert_no_page_errors()


@pytest.mark.timeout(120)
async def test_a_cancelled_top_up_says_so_and_keeps_the_form(stage: Stage) -> None:
    (a,) = await stage.start(1)
    client = await stage.talk("client", a, "c-quinn", name="Quinn Client")
    await client.page.set_viewport_size(NARROW)
    await expect(client.tid("topup-form")).to_be_visible()
    await client.tid("notes-input").fill(NOTES)

    # An amount of the client's own, checked against the limits first.
    await client.tid("topup-custom-choice").check()
    await expect(client.tid("topup-custom")).to_be_focused()
    await client.tid("topup-custom").fill("2")
    await client.tid("topup-pay").click()
    await expect(client.tid("topup-error")).to_contain_text("£5.00")
    await expect(client.tid("topup-custom")).to_have_attribute("aria-invalid", "true")
    await client.tid("topup-custom").fill("12.50")
    await expect(client.tid("topup-pay")).to_have_text("Pay £12.50")

    # Back from the payment page without paying (as its "cancel" link leads).
    await client.page.goto(a.url + "/talk?topup=cancelled", wait_until="load")
    await expect(client.tid("topup-result")).to_have_text(
        "Your top-up was cancelled: nothing was charged."
    )
    await expect(client.tid("notes-input")).to_have_value(NOTES)
    await expect(client.tid("wallet-line")).to_contain_text("your balance £0.00")
    await assert_fits(client, "top-up cancelled")
    stage.assert_no_page_errors()
