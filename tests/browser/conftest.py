"""The real-browser tier: Debian's Chromium, driven by Playwright, against real servers.

These tests run only with ``QC_BROWSER=1`` (``scripts/browser-tests`` sets it and runs
them inside a network namespace that has nothing but loopback, so ICE can never send
a packet anywhere else); the main ``pytest`` run does not collect them.

What a test gets (the ``stage`` fixture, a :class:`Stage`):

- its own ``redis-server`` (``tests/conftest.py``) and ``dispatch serve`` processes
  (``tests/integration/harness.py``'s :class:`ServerProcess`) sharing that Redis and
  one SQLite file in the test's tmp dir, started with ``--dev`` (``DISPATCH_DEV=1``)
  and short clocks;
- one Chromium (``/usr/bin/chromium``, or ``QC_CHROMIUM``), launched with the flags
  the issue names (fake camera and microphone, loopback ICE, no background traffic);
- a browser context per person (:class:`Person`: a therapist console, a client on a
  phone-sized screen, an operator), each page opened with its token in the URL
  fragment (``#token=...``);
- screenshots (:meth:`Person.shot`) in ``artifacts/browser/<test>-<who>-<step>.png``,
  and on a failure one of every page, the pages' console errors and the servers' logs.

Every wait is bounded (Playwright's timeouts are set on every context, ``expect``'s
default is raised to :data:`EXPECT_TIMEOUT_MS`); everything is closed after the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import pytest_asyncio
from integration.harness import (
    Cluster,
    ServerProcess,
    repo_root,
    token,
)

if TYPE_CHECKING:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        Locator,
        Page,
        ViewportSize,
        WebSocket,
    )

#: Only ``QC_BROWSER=1`` collects this tier (scripts/browser-tests sets it).
ENABLED: Final = os.environ.get("QC_BROWSER") == "1"
collect_ignore_glob: list[str] = [] if ENABLED else ["test_*.py"]

CHROMIUM: Final = Path(os.environ.get("QC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)

ARTIFACTS: Final = repo_root() / "artifacts" / "browser"

LAUNCH_TIMEOUT_MS: Final = 30_000
NAVIGATION_TIMEOUT_MS: Final = 15_000
ACTION_TIMEOUT_MS: Final = 10_000
EXPECT_TIMEOUT_MS: Final = 10_000
SCREENSHOT_TIMEOUT_MS: Final = 30_000
#: A server's start-up (a loaded 2-core machine imports slowly).
SERVER_START_TIMEOUT_S: Final = 45.0
#: How long a call may take to show decoded video on a side.
VIDEO_TIMEOUT_S: Final = 30.0

#: Settings every server of the tier runs with (over the harness's FAST_SETTINGS).
BROWSER_SETTINGS: Final[Mapping[str, object]] = {
    "dev": True,
    "stats_interval_s": 0.5,
    "log_level": "info",
}

#: A phone-sized screen for the client (the issue: /talk works on a phone).
PHONE: Final[ViewportSize] = {"width": 390, "height": 844}
DESKTOP: Final[ViewportSize] = {"width": 1280, "height": 800}

#: The profile every test therapist has: it may take what ``Person.ask`` sends.
PROFILE: Final[Mapping[str, object]] = {
    "bio": "Browser-test therapist.",
    "photo_url": "",
    "regions": ["GB-ENG"],
    "languages": ["en"],
    "topics": ["anxiety", "stress"],
    "works_with_minors": False,
}

_FRAMES_DECODED_JS: Final = """
async () => {
  const call = window.qcCall;
  if (!call || !call.pc) return -1;
  const stats = await call.pc.getStats();
  let frames = 0;
  stats.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
  });
  return frames;
}
"""


_CALL_STATE_JS: Final = """
() => {
  const c = window.qcCall;
  if (!c) return null;
  const pc = c.pc;
  return {
    call: c.state, joined: c.joined, peerJoined: c.peerJoined, live: c.live,
    pc: pc ? [pc.connectionState, pc.iceConnectionState, pc.signalingState] : null,
    pcId: c.pcId, remotePcId: c.remotePcId,
  };
}
"""


_FRAMES_KEPT: Final = 2000


def _frame_summary(payload: str | bytes) -> str:
    """A frame's type and ids (rtc.signal: the SDP type or "candidate"); no free text."""
    try:
        frame = json.loads(payload)
    except (ValueError, TypeError):
        return f"(unreadable, {len(payload)} bytes)"
    if not isinstance(frame, dict):
        return "(not a map)"
    parts = [str(frame.get("type"))]
    for key in ("ref", "code", "reason", "request_id", "session_id", "from", "available"):
        if key in frame:
            parts.append(f"{key}={frame[key]}")
    data = frame.get("data")
    if isinstance(data, dict):
        desc = data.get("description")
        what = desc.get("type") if isinstance(desc, dict) else None
        what = what or ("candidate" if data.get("candidate") else None)
        hello = "hello+restart" if data.get("restart") else "hello"
        what = what or (hello if data.get("hello") else "?")
        parts.append(f"data={what} pc={data.get('pc')} to={data.get('to')}")
    for key in ("request", "session"):
        obj = frame.get(key)
        if isinstance(obj, dict):
            parts.append(f"{key}={obj.get('id')}/{obj.get('state')}")
    return " ".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120]


class Person:
    """One person's page in its own browser context."""

    def __init__(self, stage: Stage, label: str, context: BrowserContext, page: Page) -> None:
        self.stage = stage
        self.label = label
        self.context = context
        self.page = page
        #: Uncaught exceptions in the page (``pageerror``): each one is a page bug.
        self.page_errors: list[str] = []
        #: Console messages of type error or warning, for failure reports.
        self.console: list[str] = []
        #: A summary of every websocket frame, for failure reports.
        self.frames: list[str] = []
        page.on("websocket", self._tap)
        page.on(
            "response",
            lambda resp: (
                self.console.append(f"http {resp.status}: {resp.request.method} {resp.url}")
                if resp.status >= 400
                else None
            ),
        )
        page.on("pageerror", lambda exc: self.page_errors.append(f"{exc.name}: {exc.message}"))
        page.on(
            "console",
            lambda msg: (
                self.console.append(f"{msg.type}: {msg.text}")
                if msg.type in ("error", "warning")
                else None
            ),
        )

    def _tap(self, ws: WebSocket) -> None:
        """Keep a summary of the page's websocket frames (types and ids, never text)."""
        t0 = self.stage.t0

        def note(direction: str, payload: str | bytes) -> None:
            if len(self.frames) < _FRAMES_KEPT:
                when = time.monotonic() - t0
                self.frames.append(f"[{when:7.2f}s] {direction} {_frame_summary(payload)}")

        ws.on("framesent", lambda payload: note("->", payload))
        ws.on("framereceived", lambda payload: note("<-", payload))
        ws.on("close", lambda _ws: note("xx", '{"type": "(socket closed)"}'))

    def tid(self, test_id: str) -> Locator:
        """The element(s) with ``data-testid=test_id``."""
        return self.page.get_by_test_id(test_id)

    def request_item(self, request_id: str) -> Locator:
        """A console's list entry for request ``request_id``."""
        return self.page.locator(f'[data-testid="request-item"][data-request-id="{request_id}"]')

    async def shot(self, step: str) -> Path:
        """Save a screenshot as ``artifacts/browser/<test>-<who>-<step>.png``."""
        path = self.stage.shot_path(f"{self.label}-{step}")
        await self.page.screenshot(path=str(path), full_page=True, timeout=SCREENSHOT_TIMEOUT_MS)
        print(f"[{time.monotonic() - self.stage.t0:7.2f}s] {path.name}")
        return path

    async def frames_decoded(self) -> int:
        """Video frames decoded so far by ``window.qcCall.pc`` (-1: no call object)."""
        value = await self.page.evaluate(_FRAMES_DECODED_JS)
        return int(value)

    async def wait_video(self, timeout_s: float = VIDEO_TIMEOUT_S) -> int:
        """Poll ``getStats()`` until inbound video frames were decoded; returns the count."""
        deadline = time.monotonic() + timeout_s
        last = -1
        while time.monotonic() < deadline:
            last = await self.frames_decoded()
            if last > 0:
                return last
            await asyncio.sleep(0.25)
        state = await self.page.evaluate(_CALL_STATE_JS)
        raise AssertionError(
            f"{self.label}: no video frame decoded within {timeout_s}s "
            f"(framesDecoded={last}, pc state={state})"
        )

    async def wait_more_video(self, frames: int = 10, timeout_s: float = 15.0) -> None:
        """Wait until ``frames`` more video frames were decoded: the video is flowing now."""
        before = await self.frames_decoded()
        deadline = time.monotonic() + timeout_s
        while (now := await self.frames_decoded()) <= before + frames:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.label}: video stalled ({now - before} frames in {timeout_s}s)"
                )
            await asyncio.sleep(0.25)

    # -- what people do ----------------------------------------------------------------------
    async def go_available(self) -> None:
        """Console: press the availability toggle and wait until the server confirmed it."""
        from playwright.async_api import expect

        toggle = self.tid("availability-toggle")
        await expect(toggle).to_be_visible()
        await expect(toggle).to_have_attribute("aria-pressed", "false")
        await toggle.click()
        await expect(toggle).to_have_attribute("aria-pressed", "true")

    async def ask(
        self,
        *,
        topics: tuple[str, ...] = ("anxiety",),
        notes: str = "",
        region: str = "GB-ENG",
        language: str = "en",
        age: int | None = None,
    ) -> None:
        """Talk page: fill the form and press "talk now" (no wait for the outcome)."""
        from playwright.async_api import expect

        await expect(self.tid("talk-form")).to_be_visible()
        for topic in topics:
            await self.tid(f"topic-{topic}").check()
        if notes:
            await self.tid("notes-input").fill(notes)
        await self.tid("region-select").select_option(region)
        await self.tid("language-select").select_option(language)
        if age is not None:
            await self.tid("age-input").fill(str(age))
        await self.tid("talk-now").click()

    async def chat(self, text: str) -> None:
        """In a call: type ``text`` and press send."""
        await self.tid("chat-input").fill(text)
        await self.tid("chat-send").click()

    def chat_message(self, text: str) -> Locator:
        return self.tid("chat-log").get_by_test_id("chat-message").filter(has_text=text)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.context.close(), timeout=10)


class Stage:
    """The servers, the browser and the people of one test."""

    def __init__(self, browser: Browser, redis_url: str, workdir: Path, test_name: str) -> None:
        self.browser = browser
        self.redis_url = redis_url
        self.workdir = workdir
        self.test_name = _slug(test_name)
        self.servers: list[ServerProcess] = []
        self.cluster = Cluster(self.servers)
        self.people: list[Person] = []
        self.t0 = time.monotonic()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{self.test_name}-*.png"):
            old.unlink(missing_ok=True)

    # -- servers -----------------------------------------------------------------------------
    async def start(self, n: int = 2, **settings: object) -> list[ServerProcess]:
        """Start ``n`` servers (names A, B, ...) sharing Redis and the SQLite file."""
        merged = {**BROWSER_SETTINGS, **settings}
        names = [chr(ord("A") + len(self.servers) + i) for i in range(n)]
        new = [ServerProcess(name, self.redis_url, self.workdir, merged) for name in names]
        self.servers.extend(new)
        for server in new:
            server.spawn()
        await asyncio.gather(*(s.wait_ready(SERVER_START_TIMEOUT_S) for s in new))
        await asyncio.gather(*(self.cluster.wait_ready(s) for s in new))
        return new

    async def therapist(self, therapist_id: str, name: str, **profile: object) -> None:
        """Create the therapist's profile (as an operator)."""
        body = {**PROFILE, "name": name, **profile}
        resp = await self.cluster.call(
            self.servers[0],
            "PUT",
            f"/v1/therapists/{therapist_id}",
            token("operator", "op-browser"),
            body,
        )
        assert resp.status_code in (200, 201), resp.text

    async def fund(self, client_id: str, amount_minor: int = 100_000) -> None:
        """Top the client's wallet up through ``POST /v1/wallet/topups`` (as an operator)."""
        body = {
            "client_id": client_id,
            "amount_minor": amount_minor,
            "reference": f"browser-{client_id}-{time.monotonic_ns()}",
        }
        resp = await self.cluster.call(
            self.servers[0], "POST", "/v1/wallet/topups", token("operator", "op-browser"), body
        )
        assert resp.status_code in (200, 201), resp.text

    async def api(self, method: str, path: str, as_user: tuple[str, str], body: Any = None) -> Any:
        """An HTTP call to the first server as ``(role, sub)``; asserts 2xx, returns JSON."""
        resp = await self.cluster.call(self.servers[0], method, path, token(*as_user), body)
        assert 200 <= resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    # -- people ------------------------------------------------------------------------------
    async def open(
        self,
        label: str,
        server: ServerProcess,
        path: str,
        *,
        role: str | None = None,
        sub: str | None = None,
        name: str | None = None,
        phone: bool = False,
        permissions: tuple[str, ...] = (),
        before_load: Callable[[Page], Awaitable[None]] | None = None,
        ttl_s: float = 3600,
    ) -> Person:
        """A new browser context on ``server``'s ``path``; with ``role`` and ``sub``
        the page gets a token in its URL fragment. ``permissions`` are granted beside
        the camera and microphone; ``before_load`` is awaited with the page before it
        loads (to add a script that runs before the page's own, or to route its
        websocket through the test's hands); ``ttl_s`` is the token's lifetime."""
        context = await self.browser.new_context(
            viewport=PHONE if phone else DESKTOP,
            is_mobile=phone,
            has_touch=phone,
            permissions=["camera", "microphone", *permissions],
        )
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
        page = await context.new_page()
        person = Person(self, label, context, page)
        self.people.append(person)
        if before_load is not None:
            await before_load(page)
        url = server.url + path
        if role is not None and sub is not None:
            url += "#token=" + token(role, sub, name=name, ttl_s=ttl_s)
        await page.goto(url, wait_until="load")
        return person

    async def console(
        self, label: str, server: ServerProcess, therapist_id: str, **options: Any
    ) -> Person:
        return await self.open(
            label, server, "/console", role="therapist", sub=therapist_id, **options
        )

    async def talk(
        self,
        label: str,
        server: ServerProcess,
        client_id: str,
        name: str = "Casey Client",
        **options: Any,
    ) -> Person:
        return await self.open(
            label, server, "/talk", role="client", sub=client_id, name=name, phone=True, **options
        )

    async def ops(self, label: str, server: ServerProcess) -> Person:
        return await self.open(label, server, "/ops", role="operator", sub="op-browser")

    # -- artifacts and checks ----------------------------------------------------------------
    def shot_path(self, step: str) -> Path:
        return ARTIFACTS / f"{self.test_name}-{_slug(step)}.png"

    def assert_no_page_errors(self) -> None:
        """No page threw an uncaught exception during the test."""
        errors = {p.label: p.page_errors for p in self.people if p.page_errors}
        assert not errors, f"uncaught errors in the pages: {errors}"

    async def report_failure(self) -> None:
        for person in self.people:
            with contextlib.suppress(Exception):
                await person.shot("failure")
            print(f"\n----- page {person.label} ({person.page.url.split('#')[0]}) -----")
            for line in person.page_errors:
                print(f"pageerror: {line}")
            for line in person.console[-40:]:
                print(line)
            with contextlib.suppress(Exception):
                print(f"call: {await person.page.evaluate(_CALL_STATE_JS)}")
            print("websocket frames:")
            for line in person.frames[-150:]:
                print(f"  {line}")
        for server in self.servers:
            print(f"\n----- server {server.name} log (tail) -----\n{server.log_tail(60)}")

    async def aclose(self) -> None:
        await asyncio.gather(*(p.close() for p in self.people), return_exceptions=True)
        await self.cluster.aclose()


# -- fixtures ----------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so fixtures know a test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(node: pytest.Item) -> bool:
    return any(
        getattr(getattr(node, f"rep_{when}", None), "failed", False) for when in ("setup", "call")
    )


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, with the issue's flags; closed after the test."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=list(CHROMIUM_ARGS),
            headless=True,
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield launched
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(launched.close(), timeout=15)


@pytest_asyncio.fixture
async def stage(
    browser: Browser, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Stage]:
    """A :class:`Stage` for the test; no server runs until ``await stage.start()``."""
    the_stage = Stage(browser, redis_url, tmp_path, request.node.name)
    try:
        yield the_stage
    finally:
        if _failed(request.node):
            await the_stage.report_failure()
        await the_stage.aclose()
