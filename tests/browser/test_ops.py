"""The operator's page in a real browser (issue #13): live lists, charts that survive a
reload, and a withdrawal processed from invoice to payment.

Two servers share Redis. The operator page (on A) lists the two therapists online (one
console on each server); a client's request (asked on B) shows in the waiting list, then
as t-alpha's claim once it takes it, then as a live call once the client accepts. A
reload of the page starts its charts from the service's history (``GET
/v1/pool/history``, with samples from before the reload). The call ends, which credits
t-alpha its share; it asks to withdraw it, and the operator records the invoice (the
payout date appears) and then, by keyboard, marks it paid. Last, the page at 360 px wide
stacks without scrolling sideways.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from playwright.async_api import expect

from .conftest import Stage

pytestmark = pytest.mark.integration

ALPHA = "Dr Alpha Ops"
BETA = "Dr Beta Ops"
THERAPIST = ("therapist", "t-alpha")


async def _earned(stage: Stage, timeout_s: float = 15.0) -> int:
    """t-alpha's available earnings once the ended call has been settled."""
    deadline = time.monotonic() + timeout_s
    while True:
        earnings = await stage.api("GET", "/v1/earnings", THERAPIST)
        if earnings["available_minor"] > 0:
            return int(earnings["available_minor"])
        assert time.monotonic() < deadline, f"no earnings after the call: {earnings}"
        await asyncio.sleep(0.25)


@pytest.mark.timeout(180)
async def test_the_operator_page_lists_charts_and_pays(stage: Stage) -> None:
    a, b = await stage.start(2)
    await stage.therapist("t-alpha", ALPHA)
    await stage.therapist("t-beta", BETA)
    await stage.fund("c-olga")

    ops = await stage.ops("operator", a)
    alpha = await stage.console("t-alpha", a, "t-alpha")
    beta = await stage.console("t-beta", b, "t-beta")
    await alpha.go_available()
    await beta.go_available()
    therapists = ops.tid("ops-therapists-list")
    alpha_row = therapists.locator('[data-therapist-id="t-alpha"]')
    await expect(alpha_row).to_have_attribute("data-state", "available")
    await expect(alpha_row).to_contain_text(ALPHA)
    await expect(therapists.locator('[data-therapist-id="t-beta"]')).to_contain_text("Available")
    await expect(ops.tid("ops-waiting-list").locator("li")).to_have_count(0)

    # A request waits: in the list with its topics, region and language, its age ticking.
    client = await stage.talk("client", b, "c-olga", name="Olga Client")
    await client.ask(topics=("stress",))
    await expect(alpha.tid("request-item")).to_have_count(1)
    rid = await alpha.tid("request-item").get_attribute("data-request-id")
    assert rid
    waiting = ops.tid("ops-waiting-list").locator(f'[data-request-id="{rid}"]')
    await expect(waiting).to_contain_text("stress · GB-ENG · en")
    await expect(waiting).to_contain_text("c-olga")
    age = waiting.locator("time")
    await expect(age).to_have_text(re.compile(r"^0:\d\d$"))
    await expect(age).not_to_have_text(await age.text_content() or "")  # it ticks
    await ops.shot("waiting")

    # t-alpha takes it: a claim with the time left to accept; t-alpha is busy.
    await alpha.request_item(rid).get_by_test_id("accept-button").click()
    claim = ops.tid("ops-claims-list").locator(f'[data-request-id="{rid}"]')
    await expect(claim).to_contain_text(ALPHA)
    await expect(claim).to_contain_text(re.compile(r"\d:\d\d left for the client to accept"))
    await expect(waiting).to_have_count(0)
    await expect(alpha_row).to_have_attribute("data-state", "busy")
    await ops.shot("claimed")

    # The client accepts: the call shows, live once both sides have joined.
    await client.tid("terms-checkbox").check()
    await client.tid("accept-offer").click()
    await expect(alpha.tid("call-view")).to_be_visible()
    call = ops.tid("ops-calls-list").locator('[data-testid="ops-call-item"]')
    await expect(call).to_have_attribute("data-state", "live")
    await expect(call).to_contain_text(f"{ALPHA} with client c-olga")
    await expect(claim).to_have_count(0)
    await ops.shot("call")

    # A reload: the charts start from the service's history, not from nothing.
    async with ops.page.expect_response(lambda r: "/v1/pool/history" in r.url) as answer:
        await ops.page.reload(wait_until="load")
    history = await (await answer.value).json()
    assert history["samples"], history
    await ops.page.wait_for_function("() => window.qcOps && window.qcOps.historyLoaded > 0")
    oldest, opened = await ops.page.evaluate(
        "() => [window.qcOps.history.points[0].t, performance.timeOrigin]"
    )
    assert oldest < opened - 2000, (oldest, opened)  # from before this page load
    await expect(ops.page.locator("#sum-waiting")).not_to_contain_text("no data")
    await expect(call).to_have_attribute("data-state", "live")  # the lists come back too

    # The call ends; t-alpha's share is its to withdraw.
    await alpha.tid("end-call").click()
    await expect(alpha.tid("call-ended")).to_be_visible()
    await expect(call).to_have_count(0)
    earned = await _earned(stage)
    asked = await stage.api("POST", "/v1/withdrawals", THERAPIST, {"amount_minor": earned})
    wid = asked["withdrawal"]["id"]

    section = ops.tid("ops-withdrawals")
    await section.get_by_test_id("withdrawals-refresh").click()
    row = section.locator(f'[data-testid="withdrawal-row"][data-withdrawal-id="{wid}"]')
    pounds = f"£{earned // 100}.{earned % 100:02d}"
    await expect(row).to_contain_text(pounds)
    await expect(row).to_contain_text("t-alpha")
    await expect(row.get_by_test_id("withdrawal-state")).to_have_text("Awaiting the invoice")
    await ops.shot("withdrawal-new")

    await row.get_by_test_id("withdrawal-invoice").click()
    await expect(row.get_by_test_id("withdrawal-result")).to_contain_text("scheduled for")
    await expect(row.get_by_test_id("withdrawal-state")).to_have_text("Scheduled")
    (scheduled,) = (await stage.api("GET", "/v1/withdrawals", THERAPIST))["withdrawals"]
    assert scheduled["state"] == "scheduled" and scheduled["payout_date"]
    await expect(row.locator(f'time[datetime="{scheduled["payout_date"]}"]')).to_have_count(1)
    await ops.shot("withdrawal-scheduled")

    # Keyboard: the next step has the focus; Enter marks it paid.
    await expect(row.get_by_test_id("withdrawal-paid")).to_be_focused()
    await ops.page.keyboard.press("Enter")
    await expect(row.get_by_test_id("withdrawal-result")).to_contain_text("Marked as paid")
    await expect(row.get_by_test_id("withdrawal-state")).to_have_text("Paid")
    await expect(row.get_by_test_id("withdrawal-paid")).to_have_count(0)
    (paid,) = (await stage.api("GET", "/v1/withdrawals", THERAPIST))["withdrawals"]
    assert paid["state"] == "paid"
    await ops.shot("withdrawal-paid")

    # A phone-sized screen: the lists stack and nothing scrolls sideways.
    await ops.page.set_viewport_size({"width": 360, "height": 800})
    await expect(ops.tid("ops-therapists-list")).to_be_visible()
    wide = await ops.page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 360, wide
    first = await ops.tid("ops-waiting-list").bounding_box()
    second = await ops.tid("ops-claims-list").bounding_box()
    assert first and second and first["x"] == second["x"] and first["y"] < second["y"]
    await ops.shot("narrow")
    stage.assert_no_page_errors()
