"""Accessibility in a real browser: the keyboard alone, and the contrast of every text.

- keyboard: a therapist goes available and accepts a request, a client asks, ticks the
  terms and accepts, chat is sent and the call ended, pressing only Tab, Shift+Tab,
  Space and Enter; each control is reached by Tab from where the focus was.
- contrast: on every page state the test passes through (sign-in, console list,
  console waiting for the client, console and client in the call, the client's form,
  waiting screen, offer and end, the operator's dashboard), every visible text has a
  contrast ratio against what is behind it of at least 4.5:1, or 3:1 for large text
  (WCAG 2.x AA, success criterion 1.4.3). Text over a picture or video is left out
  (no colour stands behind it), and so is text of a disabled control (exempt in WCAG).
  On the client's phone-sized screen nothing reaches past the right edge.
"""

from __future__ import annotations

import re
from typing import Any, Final

import pytest
from playwright.async_api import expect

from .conftest import PHONE, Person, Stage

pytestmark = pytest.mark.integration

ALPHA = "Dr Alpha Browser"

#: How many Tab presses may stand between the focus and the control it is to reach.
TAB_LIMIT: Final = 60

#: Every visible text whose contrast falls short, as {text, ratio, need, color, background}.
_LOW_CONTRAST_JS: Final = """
() => {
  const parse = (s) => {
    const m = /^rgba?\\(([^)]+)\\)$/.exec(s || "");
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3]));
  const lum = (rgb) => {
    const f = (c) => {
      c /= 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * f(rgb[0]) + 0.7152 * f(rgb[1]) + 0.0722 * f(rgb[2]);
  };
  // The colour behind an element: its own and its ancestors' backgrounds, blended;
  // null where a picture (or a video) stands behind it.
  const behind = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const cs = getComputedStyle(e);
      if (cs.backgroundImage !== "none" || e.tagName === "VIDEO") return null;
      const c = parse(cs.backgroundColor);
      if (c && c[3] > 0) {
        layers.push(c);
        if (c[3] >= 1) break;
      }
    }
    let bg = [255, 255, 255];
    for (const layer of layers.reverse()) bg = over(layer, bg);
    return bg;
  };
  const low = [];
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const el = node.parentElement;
    if (!el || seen.has(el) || !node.textContent.trim()) continue;
    seen.add(el);
    if (!el.checkVisibility({ opacityProperty: true, visibilityProperty: true })) continue;
    const box = el.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1) continue; // visually hidden, for screen readers
    if (el.closest(":disabled, [aria-disabled='true']")) continue;
    const cs = getComputedStyle(el);
    const fg = parse(cs.color);
    const bg = behind(el);
    if (!fg || !bg) continue;
    const text = over(fg, bg);
    const [hi, lo] = [lum(text), lum(bg)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(cs.fontSize);
    const large = size >= 24 || (Number(cs.fontWeight) >= 700 && size >= 18.66);
    const need = large ? 3 : 4.5;
    if (ratio + 0.005 < need) {
      low.push({
        text: node.textContent.trim().slice(0, 40),
        ratio: Math.round(ratio * 100) / 100,
        need,
        color: cs.color,
        background: `rgb(${bg.map(Math.round).join(", ")})`,
      });
    }
  }
  return low;
}
"""

_FOCUSED_TESTID_JS: Final = "() => document.activeElement?.dataset?.testid ?? null"


_OVERFLOW_JS: Final = """
() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll("body *")].filter((el) => {
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.right > width + 1;
  });
  return { scroll: document.documentElement.scrollWidth, width,
           wide: wide.slice(0, 5).map((el) => el.id || el.dataset.testid || el.tagName) };
}
"""


async def assert_fits(person: Person, state: str) -> None:
    """Nothing reaches past the right edge of the viewport, whatever its width, and
    every text has contrast."""
    fit = await person.page.evaluate(_OVERFLOW_JS)
    assert fit["scroll"] <= fit["width"] and not fit["wide"], f"{person.label} ({state}): {fit}"
    await assert_contrast(person, state)


async def assert_contrast(person: Person, state: str) -> None:
    """Every visible text of ``person``'s page meets WCAG AA contrast; on a phone-sized
    screen nothing reaches past the right edge (no sideways scrolling)."""
    low: list[dict[str, Any]] = await person.page.evaluate(_LOW_CONTRAST_JS)
    assert not low, f"{person.label} ({state}): text with too little contrast: {low}"
    if person.page.viewport_size == PHONE:
        fit = await person.page.evaluate(_OVERFLOW_JS)
        assert fit["scroll"] <= fit["width"] and not fit["wide"], f"{person.label} ({state}): {fit}"


async def tab_to(person: Person, test_id: str, *, backwards: bool = False) -> None:
    """Press Tab (Shift+Tab) until the control ``test_id`` has the focus."""
    key = "Shift+Tab" if backwards else "Tab"
    for _ in range(TAB_LIMIT):
        await person.page.keyboard.press(key)
        if await person.page.evaluate(_FOCUSED_TESTID_JS) == test_id:
            return
    raise AssertionError(f"{person.label}: {key} never reached {test_id!r} in {TAB_LIMIT} presses")


async def press_on(person: Person, test_id: str, key: str, *, backwards: bool = False) -> None:
    """Reach the control ``test_id`` by Tab, then press ``key`` ("Space", "Enter") on it."""
    await tab_to(person, test_id, backwards=backwards)
    await person.page.keyboard.press(key)


@pytest.mark.timeout(150)
async def test_the_whole_path_by_keyboard_with_enough_contrast(stage: Stage) -> None:
    (a,) = await stage.start(1, demo=True)
    await stage.therapist("t-alpha", ALPHA)
    await stage.fund("c-kit")

    signin = await stage.open("signin", a, "/")
    await expect(signin.tid("signin-user").first).to_be_visible()
    await assert_contrast(signin, "sign-in")

    ops = await stage.ops("operator", a)
    await expect(ops.tid("stat-waiting")).to_have_text("0")
    await assert_contrast(ops, "dashboard")

    # The therapist goes available with the keyboard.
    alpha = await stage.console("t-alpha", a, "t-alpha")
    toggle = alpha.tid("availability-toggle")
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    await press_on(alpha, "availability-toggle", "Space")
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    await assert_contrast(alpha, "available, no request")

    # The client fills the form with the keyboard: a topic, a note, "talk now".
    client = await stage.talk("client", a, "c-kit", name="Kit Client")
    await expect(client.tid("talk-form")).to_be_visible()
    await assert_contrast(client, "form")
    await press_on(client, "topic-anxiety", "Space")
    await expect(client.tid("topic-anxiety")).to_be_checked()
    await tab_to(client, "notes-input")
    await client.page.keyboard.type("Typed with the keyboard alone.")
    await press_on(client, "talk-now", "Enter")
    await expect(client.tid("waiting-screen")).to_be_visible()
    await assert_contrast(client, "waiting")

    # The console announces it; the therapist reaches Accept by Tab and presses Enter.
    await expect(alpha.tid("request-item")).to_have_count(1)
    await expect(alpha.tid("live-region")).to_contain_text(re.compile("request", re.I))
    await assert_contrast(alpha, "a request waiting")
    await expect(ops.tid("stat-waiting")).to_have_text("1")
    await assert_contrast(ops, "one waiting")
    await press_on(alpha, "accept-button", "Enter")
    await expect(alpha.tid("waiting-confirm")).to_be_visible()
    await assert_contrast(alpha, "waiting for the client")

    # The offer: the terms by Space, Accept by Enter.
    await expect(client.tid("therapist-card")).to_be_visible()
    await assert_contrast(client, "offer")
    await press_on(client, "terms-checkbox", "Space")
    await expect(client.tid("terms-checkbox")).to_be_checked()
    await press_on(client, "accept-offer", "Enter")
    await expect(client.tid("call-view")).to_be_visible()
    await expect(alpha.tid("call-view")).to_be_visible()

    # In the call: a chat line sent with Enter, then the therapist ends it by keyboard.
    await tab_to(client, "chat-input")
    await client.page.keyboard.type("Sent by keyboard")
    await client.page.keyboard.press("Enter")
    await expect(alpha.chat_message("Sent by keyboard")).to_have_count(1)
    await assert_contrast(client, "in the call")
    await assert_contrast(alpha, "in the call")
    await press_on(alpha, "end-call", "Enter", backwards=True)
    await expect(alpha.tid("call-ended")).to_be_visible()
    await expect(client.tid("end-message")).to_be_visible()
    await assert_contrast(alpha, "call ended")
    await assert_contrast(client, "call ended")
    await alpha.shot("ended-by-keyboard")
    await client.shot("ended-by-keyboard")
    stage.assert_no_page_errors()
