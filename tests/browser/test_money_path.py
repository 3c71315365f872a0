"""Issue #13's "done when", all through the pages, on two servers sharing one
Redis and one database: a new client with £0 tops up by card (the ``--dev``
test payment page), talks, sees the cost and finds the session afterwards; the
therapist (on the other server) sees what it earned and withdraws it; an
operator pays it out; the therapist sees it paid. Every step is a person
pressing buttons; the HTTP API is only read, to check the pages told the truth.
"""

from __future__ import annotations

import asyncio
import re
from typing import Final

import pytest
from playwright.async_api import expect

from .conftest import Stage

pytestmark = pytest.mark.integration

NAME: Final = "Dr Whole Path"


@pytest.mark.timeout(300)
async def test_a_new_client_pays_talks_and_the_therapist_is_paid_out(stage: Stage) -> None:
    a, b = await stage.start(2, price_per_minute_minor=150, therapist_share_pct=60)
    await stage.therapist("t-path", NAME)

    # The client, on A, with nothing in its wallet: tops up £20.00 by "card".
    client = await stage.talk("client", a, "c-path", name="Robin Client")
    await expect(client.tid("wallet-line")).to_contain_text("your balance £0.00")
    await client.page.locator('[data-testid="topup-amount"][data-amount="2000"]').check()
    await client.tid("topup-pay").click()
    await client.page.wait_for_url(re.compile(r"/dev/checkout/"))
    await expect(client.page.locator("body")).to_contain_text("TEST PAYMENT")
    await client.page.get_by_role("button", name=re.compile(r"^pay", re.I)).click()
    await client.page.wait_for_url(re.compile(r"/talk"))
    await expect(client.tid("topup-result")).to_have_text(
        "Your top-up of £20.00 arrived.", timeout=20_000
    )
    await expect(client.tid("wallet-line")).to_contain_text("your balance £20.00")

    # The therapist, on B, takes the request; they talk; the client hangs up.
    therapist = await stage.console("t-path", b, "t-path")
    await therapist.go_available()
    await client.ask(topics=("anxiety",), notes="The whole path, across two servers.")
    await expect(therapist.tid("request-item")).to_have_count(1)
    await therapist.tid("request-item").get_by_test_id("accept-button").click()
    await expect(client.tid("offer-price")).to_contain_text("£1.50 a minute")
    await client.tid("terms-checkbox").check()
    await client.tid("accept-offer").click()
    await asyncio.gather(therapist.wait_video(), client.wait_video())
    await expect(client.tid("call-meter")).to_contain_text("£1.50")
    await client.chat("Thank you for your time")
    await expect(therapist.chat_message("Thank you for your time")).to_have_count(1)
    await client.tid("end-call").click()

    # The client sees what it cost and what is left, and finds the session.
    await expect(client.tid("end-message")).to_have_text("You ended the call.")
    await expect(client.tid("end-charge")).to_have_text("£1.50", timeout=15_000)
    await expect(client.tid("end-balance")).to_have_text("£18.50")
    past = client.tid("past-session").first
    await expect(past).to_contain_text(NAME)
    await expect(past).to_contain_text("£1.50")
    await past.get_by_test_id("show-transcript").click()
    await expect(past.get_by_test_id("transcript-message")).to_have_count(1)
    await client.shot("found-the-session")

    # The therapist sees the end in words and what it earned (60% of £1.50).
    await expect(therapist.tid("call-ended")).to_be_visible()
    await expect(therapist.tid("call-ended")).not_to_contain_text("ended_by")
    await expect(therapist.tid("ended-earned")).to_contain_text("£0.90", timeout=15_000)
    await therapist.tid("earnings-open").click()
    await expect(therapist.tid("earnings-available")).to_have_text("£0.90")
    await expect(therapist.tid("withdraw-amount")).to_have_value("0.90")
    await therapist.tid("withdraw-submit").click()
    await expect(therapist.tid("withdrawal-state")).to_have_text("Waiting for your invoice")
    await therapist.shot("withdrawn")

    # The operator, on A, takes the invoice and pays it out from its page.
    ops = await stage.ops("operator", a)
    section = ops.tid("ops-withdrawals")
    await section.get_by_test_id("withdrawals-refresh").click()
    row = section.get_by_test_id("withdrawal-row").filter(has_text="t-path")
    await expect(row).to_contain_text("£0.90")
    await row.get_by_test_id("withdrawal-invoice").click()
    await expect(row.get_by_test_id("withdrawal-state")).to_have_text("Scheduled")
    await row.get_by_test_id("withdrawal-paid").click()
    await expect(row.get_by_test_id("withdrawal-state")).to_have_text("Paid")
    await ops.shot("paid-out")

    # The therapist's earnings say so.
    await therapist.tid("earnings-open").click()
    await expect(therapist.tid("withdrawal-state")).to_have_text("Paid")
    await expect(therapist.tid("earnings-paid")).to_have_text("£0.90")

    # The pages told the truth: the books balance and say the same.
    wallet = await stage.api("GET", "/v1/wallet", ("client", "c-path"))
    assert wallet["balance_minor"] == 1850
    earnings = await stage.api("GET", "/v1/earnings", ("therapist", "t-path"))
    assert (earnings["available_minor"], earnings["paid_out_minor"]) == (0, 90)
    check = await stage.api("GET", "/v1/ledger/check", ("operator", "op-check"))
    assert check["balanced"] is True
    stage.assert_no_page_errors()
