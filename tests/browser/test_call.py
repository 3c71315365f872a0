"""The whole path in a real browser: two therapists on two servers, one client, one call.

The client (on server B, a phone-sized screen) asks; both consoles (t-alpha on A,
t-beta on B) show the request; t-alpha accepts; it vanishes from t-beta's list; the
client ticks the terms and accepts; the call connects with video decoded on both sides
(``getStats()``: inbound-rtp ``framesDecoded`` > 0); chat goes both ways; a private
note is saved; the therapist hangs up and both see the end. The operator page (on A)
shows the numbers move all along.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import jwt
import pytest
from integration.harness import ServerProcess
from playwright.async_api import Page, WebSocketRoute, expect

from .conftest import Person, Stage

pytestmark = pytest.mark.integration

ALPHA = "Dr Alpha Browser"
BETA = "Dr Beta Browser"

#: How many distinct colours a canvas holds (a blank one: one or two).
_CANVAS_COLOURS_JS = """
(canvas) => {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  const seen = new Set();
  for (let i = 0; i < data.length; i += 4) seen.add(data.slice(i, i + 4).join(","));
  return seen.size;
}
"""

#: t-alpha's photo: a small picture in a data: URI (the browser reaches no other host).
PHOTO = (
    "data:image/svg+xml;base64,"
    + base64.b64encode(
        b'<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96">'
        b'<circle cx="48" cy="48" r="44" fill="#1a4a9c"/></svg>'
    ).decode()
)


@pytest.mark.timeout(150)
async def test_two_therapists_one_client_one_call(stage: Stage) -> None:
    a, b = await stage.start(2)
    await stage.therapist("t-alpha", ALPHA, photo_url=PHOTO)
    await stage.therapist("t-beta", BETA)
    await stage.fund("c-casey")

    ops = await stage.ops("operator", a)
    await expect(ops.tid("stat-waiting")).to_have_text("0")

    alpha = await stage.console("t-alpha", a, "t-alpha")
    beta = await stage.console("t-beta", b, "t-beta")
    await alpha.go_available()
    await beta.go_available()
    await expect(alpha.tid("request-item")).to_have_count(0)
    await alpha.shot("available")
    await expect(ops.tid("stat-therapists_available")).to_have_text("2")
    await ops.shot("two-available")

    # The client asks (on the other server than the therapist who will take it).
    client = await stage.talk("client", b, "c-casey")
    await client.shot("form")
    notes = "Browser test: I would like to talk about exams."
    await client.ask(topics=("anxiety",), notes=notes)
    await expect(client.tid("waiting-screen")).to_be_visible()
    await expect(client.tid("queue-position")).to_have_text("1")
    await expect(client.tid("elapsed")).to_have_text(re.compile(r"^\d+:\d\d$"))
    waited = await client.tid("elapsed").text_content()
    await expect(client.tid("elapsed")).not_to_have_text(waited or "")  # it ticks
    await client.shot("waiting")

    # Both consoles show it, with the client's notes; the operator sees one waiting.
    item_alpha = alpha.tid("request-item")
    await expect(item_alpha).to_have_count(1)
    rid = await item_alpha.get_attribute("data-request-id")
    assert rid
    await expect(item_alpha).to_contain_text(notes)
    age = item_alpha.locator(".qc-age-clock")
    await expect(age).to_have_text(re.compile(r"^\d+:\d\d$"))
    await expect(age).not_to_have_text(await age.text_content() or "")  # it ticks
    await expect(beta.request_item(rid)).to_have_count(1)
    await expect(alpha.tid("live-region")).to_contain_text(re.compile("request", re.I))
    await expect(ops.tid("stat-waiting")).to_have_text("1")
    await alpha.shot("request-shown")
    await beta.shot("request-shown")
    await ops.shot("one-waiting")

    # t-alpha accepts (first come); it vanishes from t-beta's list at once.
    await alpha.request_item(rid).get_by_test_id("accept-button").click()
    await expect(alpha.tid("waiting-confirm")).to_be_visible()
    await expect(beta.request_item(rid)).to_have_count(0)
    await expect(ops.tid("stat-waiting")).to_have_text("0")
    await expect(ops.tid("stat-claimed")).to_have_text("1")
    await alpha.shot("waiting-confirm")
    await beta.shot("request-gone")

    # The client sees the therapist's card; accepting needs the terms ticked.
    await expect(client.tid("therapist-card")).to_be_visible()
    await expect(client.tid("therapist-name")).to_have_text(ALPHA)
    photo = client.page.locator("#therapist-photo")
    await expect(photo).to_be_visible()
    assert await photo.evaluate("(img) => img.complete && img.naturalWidth") == 96
    await client.shot("offer")
    await client.tid("accept-offer").click()
    await asyncio.sleep(0.5)
    await expect(client.tid("therapist-card")).to_be_visible()
    await expect(client.tid("call-view")).to_be_hidden()
    await client.tid("terms-checkbox").check()
    await client.tid("accept-offer").click()

    # The call: both sides, video decoded on both.
    await expect(client.tid("call-view")).to_be_visible()
    await expect(alpha.tid("call-view")).to_be_visible()
    await expect(alpha.tid("peer-joining")).to_be_visible()
    await expect(alpha.tid("local-video")).to_be_visible()
    await expect(alpha.tid("remote-video")).to_be_visible()
    await expect(client.tid("remote-video")).to_be_visible()
    frames_alpha, frames_client = await asyncio.gather(alpha.wait_video(), client.wait_video())
    assert frames_alpha > 0 and frames_client > 0
    await expect(ops.tid("stat-therapists_busy")).to_have_text("1")
    await alpha.shot("call-connected")
    await client.shot("call-connected")

    # Chat both ways, each message shown once on each side.
    await client.chat("Hello from the client")
    await expect(client.chat_message("Hello from the client")).to_have_count(1)
    await expect(alpha.chat_message("Hello from the client")).to_have_count(1)
    await alpha.chat("Hello from the therapist")
    await expect(alpha.chat_message("Hello from the therapist")).to_have_count(1)
    await expect(client.chat_message("Hello from the therapist")).to_have_count(1)
    await alpha.shot("chat")
    await client.shot("chat")

    # A private note, saved as the therapist types.
    note = "Browser test note: follow up next week."
    await alpha.tid("notes-input").fill(note)
    await expect(alpha.tid("notes-saved")).to_be_visible()
    await alpha.shot("note-saved")

    sessions = await stage.api("GET", "/v1/sessions", ("therapist", "t-alpha"))
    session = sessions["sessions"][0]
    assert session["request_id"] == rid
    saved = await stage.api("GET", f"/v1/sessions/{session['id']}/notes", ("therapist", "t-alpha"))
    assert saved["notes"] and saved["notes"][-1]["text"] == note
    transcript = await stage.api(
        "GET", f"/v1/sessions/{session['id']}/transcript", ("operator", "op-browser")
    )
    texts = [m["text"] for m in transcript["messages"]]
    assert texts == ["Hello from the client", "Hello from the therapist"]

    # The therapist hangs up; both see the end.
    await alpha.tid("end-call").click()
    await expect(alpha.tid("call-ended")).to_be_visible()
    await expect(alpha.tid("call-ended")).to_contain_text(re.compile("ended", re.I))
    await expect(client.tid("end-message")).to_be_visible()
    await expect(client.tid("end-message")).to_contain_text(re.compile("therapist ended", re.I))
    await expect(ops.tid("stat-therapists_busy")).to_have_text("0")
    await expect(ops.tid("stat-matched_15m")).to_have_text("1")
    await alpha.shot("call-ended")
    await client.shot("call-ended")
    await ops.shot("after-call")
    # The charts drew the last minutes, and their text summaries say what they show.
    for chart in ("chart-waiting", "chart-available", "chart-wait"):
        await expect(ops.tid(chart)).to_be_visible()
        colours = await ops.tid(chart).evaluate(_CANVAS_COLOURS_JS)
        assert colours > 2, f"{chart}: {colours} colours drawn"
    await expect(ops.page.locator("#sum-waiting")).to_contain_text("now 0")
    await expect(ops.page.locator("#sum-waiting")).to_contain_text("highest 1")
    await expect(ops.page.locator("#sum-available")).to_contain_text("highest 2")
    await expect(ops.page.locator("#sum-wait")).not_to_contain_text("no data")

    ended = await stage.api("GET", "/v1/sessions", ("client", "c-casey"))
    assert ended["sessions"][0]["id"] == session["id"]
    assert ended["sessions"][0]["state"] == "ended"
    stage.assert_no_page_errors()


async def meet(
    stage: Stage,
    therapist_server: ServerProcess,
    client_server: ServerProcess,
    client_id: str,
    client_name: str,
    *,
    amount_minor: int = 100_000,
    client_options: dict[str, Any] | None = None,
    **console_options: Any,
) -> tuple[Person, Person]:
    """t-alpha's console and a funded client's page, the request taken and accepted: the
    call is opening on both pages (no wait for its video). (therapist, client)."""
    await stage.therapist("t-alpha", ALPHA)
    await stage.fund(client_id, amount_minor=amount_minor)
    alpha = await stage.console("t-alpha", therapist_server, "t-alpha", **console_options)
    await alpha.go_available()
    client = await stage.talk(
        "client", client_server, client_id, name=client_name, **(client_options or {})
    )
    await client.ask(topics=("anxiety",))
    await expect(alpha.tid("request-item")).to_have_count(1)
    await alpha.tid("request-item").get_by_test_id("accept-button").click()
    await client.tid("terms-checkbox").check()
    await client.tid("accept-offer").click()
    await expect(alpha.tid("call-view")).to_be_visible()
    await expect(client.tid("call-view")).to_be_visible()
    return alpha, client


async def call_on_two_servers(
    stage: Stage, client_id: str, client_name: str, grace_s: float
) -> tuple[Person, Person, dict[str, Any]]:
    """t-alpha's console on server A, the client's page on B, in a call with video both
    ways: (therapist, client, the session as ``GET /v1/sessions`` shows it)."""
    a, b = await stage.start(2, reconnect_grace_s=grace_s)
    alpha, client = await meet(stage, a, b, client_id, client_name)
    await asyncio.gather(alpha.wait_video(), client.wait_video())
    sessions = await stage.api("GET", "/v1/sessions", ("therapist", "t-alpha"))
    return alpha, client, sessions["sessions"][0]


async def assert_still_live(stage: Stage, as_user: tuple[str, str], session_id: str) -> None:
    """The user's call log still has ``session_id`` newest, and ``live``."""
    sessions = (await stage.api("GET", "/v1/sessions", as_user))["sessions"]
    assert (sessions[0]["id"], sessions[0]["state"]) == (session_id, "live"), sessions[0]


@pytest.mark.timeout(120)
async def test_console_comes_back_to_the_same_call_after_a_network_blip(stage: Stage) -> None:
    alpha, client, session = await call_on_two_servers(stage, "c-hal", "Hal Client", 15.0)

    # The console's websocket drops (the page's own simulation of a lost network).
    await alpha.page.evaluate("window.qcConn.drop()")
    await expect(alpha.tid("status-line")).to_have_attribute("data-state", "reconnecting")
    await alpha.shot("reconnecting")
    await expect(alpha.tid("status-line")).to_have_attribute("data-state", "open")
    await expect(alpha.tid("call-view")).to_be_visible()
    await expect(alpha.tid("call-ended")).to_be_hidden()

    # The same session goes on: chat both ways, and fresh video keeps being decoded.
    await alpha.chat("Back after the blip")
    await expect(client.chat_message("Back after the blip")).to_have_count(1)
    await client.chat("Glad you are back")
    await expect(alpha.chat_message("Glad you are back")).to_have_count(1)
    await client.wait_more_video()
    assert await alpha.frames_decoded() > 0
    await alpha.shot("resumed")
    await client.shot("resumed")

    await assert_still_live(stage, ("therapist", "t-alpha"), session["id"])
    stage.assert_no_page_errors()


@pytest.mark.timeout(150)
async def test_a_reloaded_page_comes_back_to_the_call_with_a_new_peer_connection(
    stage: Stage,
) -> None:
    """A reload drops the page's peer connection: its `hello` from the new one makes the
    other side start afresh, whichever side reloaded (the client, then the therapist)."""
    alpha, client, session = await call_on_two_servers(stage, "c-rae", "Rae Client", 20.0)

    for reloaded, other in ((client, alpha), (alpha, client)):
        old_pc = await reloaded.page.evaluate("window.qcCall.pcId")
        other_old_pc = await other.page.evaluate("window.qcCall.pcId")
        await reloaded.page.reload(wait_until="load")
        await expect(reloaded.tid("call-view")).to_be_visible()
        # Video flows again on both sides, each over a peer connection made after the reload.
        await asyncio.gather(reloaded.wait_video(), other.wait_video())
        assert await reloaded.page.evaluate("window.qcCall.pcId") != old_pc
        assert await other.page.evaluate("window.qcCall.pcId") != other_old_pc
        await other.wait_more_video()
        await reloaded.shot("after-reload")
        if reloaded is alpha:
            # The reloaded console counts the call from the session's start, not the reload.
            await expect(alpha.tid("call-timer")).to_be_visible()
            shown = await alpha.tid("call-timer").text_content()
            lasted = await alpha.page.evaluate(
                "(t) => (Date.now() - Date.parse(t)) / 1000", session["started_at"]
            )
            match = re.search(r"(\d+):(\d\d)$", shown or "")
            assert match, shown
            assert abs(int(match[1]) * 60 + int(match[2]) - lasted) <= 2, (shown, lasted)

    # Still the same session, and chat still goes both ways.
    await client.chat("Still here after the reloads")
    await expect(alpha.chat_message("Still here after the reloads")).to_have_count(1)
    await assert_still_live(stage, ("client", "c-rae"), session["id"])
    stage.assert_no_page_errors()


@pytest.mark.timeout(150)
async def test_a_console_offline_while_the_client_reloads_finds_the_call_again(
    stage: Stage,
) -> None:
    """The console's browser goes offline; meanwhile the client reloads, and its `hello`
    from its new peer connection is lost (the therapist is away). Back online, the
    console's own `hello` after its rejoin makes the two find each other again."""
    alpha, client, session = await call_on_two_servers(stage, "c-uma", "Uma Client", 30.0)

    await alpha.context.set_offline(True)
    await alpha.page.evaluate("window.qcConn.drop()")
    await expect(alpha.tid("status-line")).to_have_attribute("data-state", "reconnecting")
    await client.page.reload(wait_until="load")
    await expect(client.tid("call-view")).to_be_visible()
    deadline = asyncio.get_running_loop().time() + 10
    while not any("-> rtc.signal" in f and "data=hello" in f for f in client.frames):
        assert asyncio.get_running_loop().time() < deadline, "the reloaded page said no hello"
        await asyncio.sleep(0.1)
    # Still offline: the console could not come back meanwhile.
    await expect(alpha.tid("status-line")).to_have_attribute("data-state", "reconnecting")
    await alpha.shot("offline")

    await alpha.context.set_offline(False)
    await expect(alpha.tid("status-line")).to_have_attribute("data-state", "open")
    await expect(alpha.tid("call-ended")).to_be_hidden()
    await asyncio.gather(client.wait_video(), alpha.wait_more_video())
    await client.wait_more_video()
    await alpha.shot("back-online")
    await client.shot("back-online")
    await assert_still_live(stage, ("client", "c-uma"), session["id"])
    stage.assert_no_page_errors()


@pytest.mark.timeout(150)
async def test_the_money_running_out_warns_then_ends_the_call_on_both_sides(
    stage: Stage,
) -> None:
    """One minute of credit (price 150, a minimum of one minute): both pages warn at
    once that it runs out, and both say why the call ended when it does, a minute on."""
    (a,) = await stage.start(1, min_balance_minutes=1, price_per_minute_minor=150)
    alpha, client = await meet(stage, a, a, "c-max", "Max Client", amount_minor=150)
    await asyncio.gather(alpha.wait_video(), client.wait_video())

    for person in (client, alpha):
        await expect(person.tid("funds-low")).to_be_visible()
        await expect(person.tid("funds-low")).to_contain_text(re.compile(r"run(s|ning) out", re.I))
        await person.shot("funds-low")

    await expect(client.tid("end-message")).to_contain_text(
        re.compile("ran out of credit", re.I), timeout=75_000
    )
    await expect(alpha.tid("call-ended")).to_have_attribute("data-reason", "funds_exhausted")
    await client.shot("funds-exhausted")
    await alpha.shot("funds-exhausted")
    wallet = await stage.api("GET", "/v1/wallet", ("client", "c-max"))
    assert wallet["balance_minor"] == 0
    stage.assert_no_page_errors()


class LoseFirstOffer:
    """Routes a console's websocket through the test, which loses the first SDP offer
    the console sends (as a relay that dropped one frame would); all else passes."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    async def __call__(self, page: Page) -> None:
        await page.route_web_socket(re.compile(r"/v1/ws$"), self._route)

    def _route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            if not self.lost and isinstance(message, str):
                data = json.loads(message).get("data")
                sdp = data.get("description") if isinstance(data, dict) else None
                if isinstance(sdp, dict) and sdp.get("type") == "offer":
                    self.lost.append(message)
                    return
            server.send(message)

        ws.on_message(to_server)  # what the server sends passes on by itself


@pytest.mark.timeout(120)
async def test_a_lost_first_offer_is_mended_by_the_clients_watchdog(stage: Stage) -> None:
    """The console's first offer never reaches the client: the call cannot connect. The
    client's watchdog asks for an ICE restart after 8 s unconnected; the console drops
    its unanswered offer (over 5 s old) and offers again; the call connects."""
    (a,) = await stage.start(1)
    loss = LoseFirstOffer()
    alpha, client = await meet(stage, a, a, "c-ned", "Ned Client", before_load=loss)
    await asyncio.gather(alpha.wait_video(timeout_s=40), client.wait_video(timeout_s=40))
    assert len(loss.lost) == 1
    asked = [f for f in client.frames if "-> rtc.signal" in f and "data=hello+restart" in f]
    assert asked, client.frames  # the watchdog's ask is what mended it
    await alpha.shot("mended")
    await client.shot("mended")
    stage.assert_no_page_errors()


@pytest.mark.timeout(150)
async def test_tokens_renewed_on_open_sockets_keep_the_call_going(stage: Stage) -> None:
    """PROTOCOL.md §11 in the pages: both sides' tokens run out mid-call; the server
    warns (auth.expiring), each page fetches a fresh token and re-authenticates its
    socket, and the call goes on past the first tokens' exp."""
    (server,) = await stage.start(1, auth_expiring_s=20.0)
    ttl = 35.0
    alpha, client = await meet(
        stage, server, server, "c-tess", "Tess Client", ttl_s=ttl, client_options={"ttl_s": ttl}
    )
    await asyncio.gather(alpha.wait_video(), client.wait_video())
    sessions = await stage.api("GET", "/v1/sessions", ("therapist", "t-alpha"))
    session_id = sessions["sessions"][0]["id"]
    read = "() => sessionStorage.getItem('qc.token')"
    first = [await p.page.evaluate(read) for p in (alpha, client)]
    exp = max(jwt.decode(t, options={"verify_signature": False})["exp"] for t in first)
    for person, old in zip((alpha, client), first, strict=True):
        # A renewed token replaces the first one (kept for a reload, too).
        await person.page.wait_for_function(
            "old => sessionStorage.getItem('qc.token') !== old", arg=old, timeout=40_000
        )
    await asyncio.sleep(max(0.0, exp - time.time()) + 2.0)  # past the first tokens' exp

    for person in (alpha, client):
        await expect(person.tid("status-line")).to_have_attribute("data-state", "open")
        await expect(person.tid("call-view")).to_be_visible()
        await expect(person.tid("signed-out")).to_have_count(0)
    await alpha.chat("Still here after the renewal")
    await expect(client.chat_message("Still here after the renewal")).to_have_count(1)
    await client.chat("Me too")
    await expect(alpha.chat_message("Me too")).to_have_count(1)
    await client.wait_more_video()
    await assert_still_live(stage, ("therapist", "t-alpha"), session_id)
    stage.assert_no_page_errors()
