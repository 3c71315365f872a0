"""Session feedback in a real browser (PROTOCOL.md §10): after a call the client
rates it on the end screen (a phone 360 px wide, the stars by keyboard) and
comments; the therapist's console shows the average, the count and the comment; an
operator looks the therapist up on /ops and sees the comment with who gave it."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import expect

from .conftest import Stage
from .test_call import meet

pytestmark = pytest.mark.integration

COMMENT = "Browser feedback: calm and helpful, thank you."


@pytest.mark.timeout(150)
async def test_a_client_rates_a_call_and_the_therapist_sees_it(stage: Stage) -> None:
    (a,) = await stage.start(1)
    alpha, client = await meet(stage, a, a, "c-fern", "Fern Client")
    await asyncio.gather(alpha.wait_video(), client.wait_video())
    await asyncio.sleep(2.0)  # the call lasts a few seconds: it went live

    await alpha.tid("end-call").click()
    await expect(client.tid("end-message")).to_be_visible()
    await client.page.set_viewport_size({"width": 360, "height": 780})
    prompt = client.tid("feedback-prompt")
    await expect(prompt).to_be_visible()
    await expect(client.tid("feedback-form")).to_be_visible()
    await client.shot("feedback-prompt")

    # Sending without a rating says so in words.
    await client.tid("feedback-send").click()
    await expect(client.tid("feedback-error")).to_have_text(re.compile("Choose a rating"))

    # The stars are radio buttons: the arrow keys choose one.
    await client.tid("feedback-star-1").focus()
    await client.page.keyboard.press("Space")
    for _ in range(3):
        await client.page.keyboard.press("ArrowRight")
    await expect(client.tid("feedback-star-4")).to_be_checked()
    await expect(client.tid("feedback-error")).to_be_hidden()
    await client.tid("feedback-comment").fill(COMMENT)
    await client.tid("feedback-comment").focus()
    await client.page.keyboard.press("Tab")  # to "Send feedback"
    await client.page.keyboard.press("Enter")
    await expect(client.tid("feedback-thanks")).to_be_visible()
    await expect(client.tid("feedback-thanks")).to_contain_text("Thank you")
    await expect(client.tid("feedback-form")).to_be_hidden()
    # Nothing wider than the phone's screen.
    width = await client.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, width
    await client.shot("feedback-sent")

    sessions = await stage.api("GET", "/v1/sessions", ("client", "c-fern"))
    sid = sessions["sessions"][0]["id"]
    given = await stage.api("GET", f"/v1/sessions/{sid}/feedback", ("client", "c-fern"))
    assert (given["feedback"]["rating"], given["feedback"]["comment"]) == (4, COMMENT)

    # The therapist's console: average, count and the comment, no client.
    await alpha.tid("feedback-open").click()
    await expect(alpha.tid("feedback-view")).to_be_visible()
    await expect(alpha.tid("feedback-average")).to_contain_text("4 out of 5")
    await expect(alpha.tid("feedback-count")).to_have_text("1 rating")
    item = alpha.tid("feedback-item")
    await expect(item).to_have_count(1)
    await expect(item).to_have_attribute("data-rating", "4")
    await expect(item).to_contain_text(COMMENT)
    await expect(item).not_to_contain_text("c-fern")
    await alpha.shot("feedback-summary")

    # An operator looks the therapist up on /ops: the comment with who gave it.
    ops = await stage.open("operator", a, "/ops", role="operator", sub="op-fb")
    await ops.tid("ops-feedback-therapist").fill("t-alpha")
    await ops.tid("ops-feedback-go").click()
    await expect(ops.tid("ops-feedback-summary")).to_contain_text(
        "Therapist t-alpha: 1 rating, an average of 4 out of 5."
    )
    row = ops.tid("ops-feedback-item")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(COMMENT)
    await expect(row).to_contain_text(f"client c-fern · session {sid}")
    # An id with nothing: said in words.
    await ops.tid("ops-feedback-therapist").fill("t-nobody")
    await ops.tid("ops-feedback-therapist").press("Enter")
    await expect(ops.tid("ops-feedback-summary")).to_have_text(
        "Therapist t-nobody has no ratings yet."
    )
    await expect(ops.tid("ops-feedback-item")).to_have_count(0)
    stage.assert_no_page_errors()
