"""A request's other ends in a real browser: declined, cancelled, expired; a minor.

- decline: the client declines the first therapist's offer; the request goes back to
  the pool, the other therapist (on the other server) takes it, the client accepts and
  the call opens; the declined therapist never sees it again.
- cancel: the client cancels while waiting; the request vanishes from both consoles,
  the client reads that it cancelled, the operator's numbers go 0 -> 1 -> 0.
- expiry: nobody takes the request within ``DISPATCH_REQUEST_MAX_WAIT_S``; the client
  reads that no therapist was available, the operator sees it expire.
- a minor: an age under 18 asks for the guardian's consent before the request goes.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import expect

from .conftest import Stage

pytestmark = pytest.mark.integration

ALPHA = "Dr Alpha Browser"
BETA = "Dr Beta Browser"


@pytest.mark.timeout(120)
async def test_decline_then_the_other_therapist_takes_it(stage: Stage) -> None:
    a, b = await stage.start(2)
    await stage.therapist("t-alpha", ALPHA)
    await stage.therapist("t-beta", BETA)
    await stage.fund("c-dana")

    alpha = await stage.console("t-alpha", a, "t-alpha")
    beta = await stage.console("t-beta", b, "t-beta")
    await alpha.go_available()
    await beta.go_available()

    client = await stage.talk("client", a, "c-dana", name="Dana Client")
    await client.ask(topics=("stress",))
    await expect(client.tid("waiting-screen")).to_be_visible()
    await expect(alpha.tid("request-item")).to_have_count(1)
    rid = await alpha.tid("request-item").get_attribute("data-request-id")
    assert rid
    await expect(beta.request_item(rid)).to_have_count(1)

    await alpha.request_item(rid).get_by_test_id("accept-button").click()
    await expect(alpha.tid("waiting-confirm")).to_be_visible()
    await expect(beta.request_item(rid)).to_have_count(0)
    await expect(client.tid("therapist-name")).to_have_text(ALPHA)
    await client.shot("offer-alpha")

    # Declined: back to waiting for the client, back in t-beta's list, never t-alpha's.
    await client.tid("decline-offer").click()
    await expect(client.tid("waiting-screen")).to_be_visible()
    await expect(beta.request_item(rid)).to_have_count(1)
    await expect(alpha.tid("waiting-confirm")).to_be_hidden()
    await expect(alpha.tid("claim-result")).to_contain_text(re.compile("declined", re.I))
    await client.shot("declined-waiting")
    await alpha.shot("declined")
    await beta.shot("request-back")
    await asyncio.sleep(1.0)
    await expect(alpha.request_item(rid)).to_have_count(0)

    await beta.request_item(rid).get_by_test_id("accept-button").click()
    await expect(beta.tid("waiting-confirm")).to_be_visible()
    await expect(client.tid("therapist-card")).to_be_visible()
    await expect(client.tid("therapist-name")).to_have_text(BETA)
    await client.shot("offer-beta")
    await client.tid("terms-checkbox").check()
    await client.tid("accept-offer").click()
    await expect(client.tid("call-view")).to_be_visible()
    await expect(beta.tid("call-view")).to_be_visible()
    await beta.shot("call")
    await client.shot("call")

    # The client hangs up this time.
    await client.tid("end-call").click()
    await expect(client.tid("end-message")).to_contain_text(re.compile("you ended", re.I))
    await expect(beta.tid("call-ended")).to_be_visible()
    await client.shot("ended")
    await beta.shot("ended")
    await expect(alpha.request_item(rid)).to_have_count(0)

    got = await stage.api("GET", f"/v1/requests/{rid}", ("operator", "op-browser"))
    assert got["request"]["state"] == "matched"
    assert got["request"]["claimed_by"] == "t-beta"
    stage.assert_no_page_errors()


@pytest.mark.timeout(90)
async def test_cancel_vanishes_from_every_console(stage: Stage) -> None:
    a, b = await stage.start(2)
    await stage.therapist("t-alpha", ALPHA)
    await stage.therapist("t-beta", BETA)
    await stage.fund("c-eli")

    ops = await stage.ops("operator", a)
    alpha = await stage.console("t-alpha", a, "t-alpha")
    beta = await stage.console("t-beta", b, "t-beta")
    await alpha.go_available()
    await beta.go_available()
    await expect(ops.tid("stat-waiting")).to_have_text("0")
    await expect(ops.tid("stat-cancelled_15m")).to_have_text("0")
    # Texting is off in this tier: the counters are there and read 0.
    await expect(ops.tid("stat-texts_sent_15m")).to_have_text("0")
    await expect(ops.tid("stat-texts_failed_15m")).to_have_text("0")
    await ops.shot("before")

    client = await stage.talk("client", b, "c-eli", name="Eli Client")
    await client.ask(topics=("anxiety",), notes="Browser test: cancel me.")
    await expect(client.tid("waiting-screen")).to_be_visible()
    await expect(alpha.tid("request-item")).to_have_count(1)
    rid = await alpha.tid("request-item").get_attribute("data-request-id")
    assert rid
    await expect(beta.request_item(rid)).to_have_count(1)
    await expect(ops.tid("stat-waiting")).to_have_text("1")
    await ops.shot("one-waiting")
    await client.shot("waiting")

    await client.tid("cancel-request").click()
    await expect(client.tid("end-message")).to_contain_text(re.compile("cancel", re.I))
    await expect(alpha.request_item(rid)).to_have_count(0)
    await expect(beta.request_item(rid)).to_have_count(0)
    await expect(ops.tid("stat-waiting")).to_have_text("0")
    await expect(ops.tid("stat-cancelled_15m")).to_have_text("1")
    await client.shot("cancelled")
    await alpha.shot("gone")
    await beta.shot("gone")
    await ops.shot("after")

    got = await stage.api("GET", f"/v1/requests/{rid}", ("client", "c-eli"))
    assert got["request"]["state"] == "cancelled"
    stage.assert_no_page_errors()


@pytest.mark.timeout(90)
async def test_expiry_tells_the_client_no_therapist_was_available(stage: Stage) -> None:
    (a,) = await stage.start(1, request_max_wait_s=4.0)
    await stage.fund("c-fay")
    ops = await stage.ops("operator", a)
    await expect(ops.tid("stat-expired_15m")).to_have_text("0")

    client = await stage.talk("client", a, "c-fay", name="Fay Client")
    await client.ask(topics=())
    await expect(client.tid("waiting-screen")).to_be_visible()
    await expect(ops.tid("stat-waiting")).to_have_text("1")
    await client.shot("waiting")

    await expect(client.tid("end-message")).to_contain_text(
        re.compile("no therapist", re.I), timeout=15_000
    )
    await expect(ops.tid("stat-waiting")).to_have_text("0")
    await expect(ops.tid("stat-expired_15m")).to_have_text("1")
    await client.shot("expired")
    await ops.shot("expired")
    stage.assert_no_page_errors()


@pytest.mark.timeout(90)
async def test_a_minor_needs_the_guardians_consent(stage: Stage) -> None:
    (a,) = await stage.start(1)
    await stage.fund("c-gus")
    client = await stage.talk("client", a, "c-gus", name="Gus Client")

    await client.ask(topics=("anxiety",), age=15)
    await expect(client.tid("guardian-consent")).to_be_visible()
    await asyncio.sleep(0.5)
    await expect(client.tid("waiting-screen")).to_be_hidden()
    await client.shot("consent-needed")
    mine = await stage.api("GET", "/v1/pool/stats", ("operator", "op-browser"))
    assert mine["waiting"] == 0

    await client.tid("guardian-consent").check()
    await client.tid("talk-now").click()
    await expect(client.tid("waiting-screen")).to_be_visible()
    await client.shot("waiting")
    stats = await stage.api("GET", "/v1/pool/stats", ("operator", "op-browser"))
    assert stats["waiting"] == 1

    await client.tid("cancel-request").click()
    await expect(client.tid("end-message")).to_contain_text(re.compile("cancel", re.I))
    stage.assert_no_page_errors()


#: Watches the console's notices without changing them: every Notification the page
#: makes ({title, body}), and every tone of its Web Audio chime.
_NOTICE_SPY_JS = """
window.qcSeen = { notices: [], tones: 0 };
const RealNotification = window.Notification;
if (RealNotification) {
  class Watched extends RealNotification {
    constructor(title, options) {
      super(title, options);
      window.qcSeen.notices.push({ title, body: (options && options.body) || "" });
    }
  }
  Object.defineProperty(Watched, "permission", { get: () => RealNotification.permission });
  Watched.requestPermission = (...args) => RealNotification.requestPermission(...args);
  window.Notification = Watched;
}
const proto = window.BaseAudioContext && window.BaseAudioContext.prototype;
if (proto) {
  const createOscillator = proto.createOscillator;
  proto.createOscillator = function () {
    window.qcSeen.tones += 1;
    return createOscillator.call(this);
  };
}
"""


@pytest.mark.timeout(90)
async def test_a_new_request_chimes_notifies_and_is_announced(stage: Stage) -> None:
    (a,) = await stage.start(1)
    await stage.therapist("t-alpha", ALPHA)
    await stage.fund("c-ivy")
    alpha = await stage.console(
        "t-alpha",
        a,
        "t-alpha",
        permissions=("notifications",),
        before_load=lambda page: page.add_init_script(_NOTICE_SPY_JS),
    )
    await expect(alpha.page.locator("#notify-state")).to_have_text(re.compile("are on"))
    await alpha.go_available()  # a click: the browser lets the page's audio start
    seen = await alpha.page.evaluate("window.qcSeen")
    assert seen == {"notices": [], "tones": 0}

    client = await stage.talk("client", a, "c-ivy", name="Ivy Client")
    notes = "Browser test: words for the therapist's eyes only."
    await client.ask(topics=("anxiety",), notes=notes)
    await expect(alpha.tid("request-item")).to_have_count(1)
    await expect(alpha.tid("live-region")).to_contain_text("New request")
    seen = await alpha.page.evaluate("window.qcSeen")
    assert [n["title"] for n in seen["notices"]] == ["New request"]
    body = seen["notices"][0]["body"]
    assert "Anxiety" in body or "anxiety" in body, body
    # A desktop notification can show on a shared screen: never the client's notes.
    assert notes not in body and "Ivy" not in body, body
    assert seen["tones"] >= 2, seen
    await alpha.shot("notified")
    stage.assert_no_page_errors()
