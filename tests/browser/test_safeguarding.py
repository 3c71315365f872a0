"""Safeguarding alerts in a real browser (issue #15, PROTOCOL.md §10).

Two servers share Redis. A therapist in a call (console on A) raises a concern from the
call view by keyboard (an empty one is refused in words first); the operator pages on B
and on A show an alert banner (role="alert") at once, with a beep attempted; a reload
keeps the banner (the open alerts are loaded). After the call the "call has ended" panel
offers the same form (Escape closes it). The operator on B reads the concern and
acknowledges it: both operator pages say who acknowledged it and when.
"""

from __future__ import annotations

from typing import Final

import pytest
from playwright.async_api import Page, ViewportSize, expect

from .conftest import Stage
from .test_access import assert_fits, tab_to
from .test_call import meet

pytestmark = pytest.mark.integration

#: The narrowest phone the pages are made for.
NARROW: Final[ViewportSize] = {"width": 360, "height": 740}

CONCERN = "The client said their partner takes their phone and money; they sounded frightened."

#: Counts the oscillators the page starts (the beep), whether or not sound may play.
_COUNT_BEEPS = """
(() => {
  window.qcBeeps = 0;
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return;
  const create = Ctx.prototype.createOscillator;
  Ctx.prototype.createOscillator = function (...args) {
    window.qcBeeps += 1;
    return create.apply(this, args);
  };
})();
"""


async def count_beeps(page: Page) -> None:
    await page.add_init_script(_COUNT_BEEPS)


@pytest.mark.timeout(180)
async def test_a_therapist_raises_a_concern_and_operators_see_and_acknowledge_it(
    stage: Stage,
) -> None:
    a, b = await stage.start(2)
    ops_b = await stage.open(
        "operator-b", b, "/ops", role="operator", sub="op-browser", before_load=count_beeps
    )
    ops_a = await stage.open("operator-a", a, "/ops", role="operator", sub="op-other")
    await expect(ops_b.tid("status-line")).to_have_attribute("data-state", "open")
    await expect(ops_a.tid("status-line")).to_have_attribute("data-state", "open")
    await expect(ops_b.tid("sg-alerts")).to_be_hidden()

    alpha, _client = await meet(stage, a, a, "c-sam", "Sam Client")

    # In the call: the button, by keyboard; an empty concern is refused in words.
    await tab_to(alpha, "sg-open-call")
    await alpha.page.keyboard.press("Enter")
    form = alpha.tid("sg-form")
    await expect(form).to_be_visible()
    await expect(alpha.tid("sg-concern")).to_be_focused()
    await alpha.tid("sg-submit").click()
    await expect(alpha.tid("sg-error")).to_have_text("Describe the concern before sending it.")
    # On a 360 px screen the form, its refusal and the call still fit.
    await alpha.page.set_viewport_size(NARROW)
    await assert_fits(alpha, "concern refused at 360 px")
    await alpha.tid("sg-concern").fill(CONCERN)
    await expect(alpha.tid("sg-error")).to_be_hidden()
    await alpha.tid("sg-submit").press("Enter")
    await expect(form).to_be_hidden()
    await expect(alpha.tid("sg-result")).to_contain_text("The care team has been alerted")
    await alpha.shot("raised")

    # Both operator pages: a banner at once, announced as an alert, the concern not in it.
    for ops in (ops_b, ops_a):
        banner = ops.tid("sg-alert")
        await expect(banner).to_have_count(1)
        await expect(banner).to_have_attribute("role", "alert")
        await expect(banner).to_have_attribute("data-state", "open")
        await expect(banner).to_contain_text("Safeguarding concern raised by therapist t-alpha")
        await expect(banner).to_contain_text("client c-sam")
        await expect(banner).not_to_contain_text("frightened")
    assert await ops_b.page.evaluate("window.qcBeeps") > 0
    await ops_b.shot("alert")
    # The operator's banner fits a 360 px phone too.
    await ops_b.page.set_viewport_size(NARROW)
    await assert_fits(ops_b, "alert at 360 px")

    # A reload keeps it (the open alerts are loaded).
    await ops_b.page.reload(wait_until="load")
    banner_b = ops_b.tid("sg-alert")
    await expect(banner_b).to_have_count(1)
    await expect(banner_b).to_have_attribute("data-state", "open")
    alert_id = await banner_b.get_attribute("data-alert-id")
    assert alert_id

    # The call ends: the ended panel offers the form too; Escape closes it.
    await alpha.tid("end-call").click()
    await expect(alpha.tid("call-ended")).to_be_visible()
    await alpha.tid("sg-open-ended").click()
    await expect(form).to_be_visible()
    await expect(alpha.tid("sg-concern")).to_be_focused()
    await alpha.page.keyboard.press("Escape")
    await expect(form).to_be_hidden()
    await expect(alpha.tid("sg-open-ended")).to_be_focused()

    # The operator on B reads the concern and acknowledges it.
    await banner_b.get_by_test_id("sg-read").click()
    await expect(banner_b.get_by_test_id("sg-concern-text")).to_have_text(CONCERN)
    await assert_fits(ops_b, "concern read at 360 px")
    await banner_b.get_by_test_id("sg-ack").click()
    await expect(banner_b).to_have_attribute("data-state", "acked")
    await expect(banner_b.get_by_test_id("sg-acked")).to_contain_text(
        "Acknowledged by op-browser at"
    )
    # The page on A is told too (through the bus), and stops alerting.
    banner_a = ops_a.tid("sg-alert")
    await expect(banner_a).to_have_attribute("data-state", "acked")
    await expect(banner_a).to_have_attribute("role", "status")
    await expect(banner_a.get_by_test_id("sg-acked")).to_contain_text("Acknowledged by op-browser")
    await ops_a.shot("acked")
    listed = await stage.api("GET", "/v1/safeguarding?open=true", ("operator", "op-x"))
    assert listed == {"alerts": []}
    done = await stage.api("GET", "/v1/safeguarding?open=false", ("operator", "op-x"))
    assert [x["id"] for x in done["alerts"]] == [alert_id]
    # Dismissed, it leaves the page.
    await banner_a.get_by_test_id("sg-dismiss").click()
    await expect(ops_a.tid("sg-alert")).to_have_count(0)
    await expect(ops_a.tid("sg-alerts")).to_be_hidden()
    stage.assert_no_page_errors()
