"""Referral in a real browser (PROTOCOL.md §10): the therapist's console shows
its code and share link (by keyboard, in the profile view); a client who opens
the link lands on /talk and, signed in, is linked with that therapist and told
so, once; a malformed code is explained in words. Phone-sized pages fit."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from .conftest import Stage
from .test_access import assert_fits, tab_to

pytestmark = pytest.mark.integration

NAME = "Rose Referrer"


@pytest.mark.timeout(150)
async def test_a_client_follows_its_therapists_link_and_is_linked(stage: Stage) -> None:
    (a,) = await stage.start(1)
    await stage.therapist("t-rose", NAME)
    rose = await stage.console("t-rose", a, "t-rose", name=NAME)
    await expect(rose.tid("status-line")).to_have_attribute("data-state", "open")
    await tab_to(rose, "profile-open")
    await rose.page.keyboard.press("Enter")
    await expect(rose.tid("profile-view")).to_be_visible()
    await tab_to(rose, "referral-show")
    await rose.page.keyboard.press("Enter")
    code_el = rose.tid("referral-code")
    await expect(code_el).to_have_text(re.compile(r"^[A-Z2-9]{8}$"))
    code = await code_el.text_content()
    assert code is not None
    await expect(rose.tid("referral-link")).to_have_value(f"{a.url}/r/{code}")
    await expect(rose.tid("referral-link")).to_be_focused()
    await rose.shot("referral-share")

    # The client opens the link (its token comes along in the fragment).
    client = await stage.open(
        "client", a, f"/r/{code}", role="client", sub="c-ref", name="Casey Client", phone=True
    )
    await expect(client.page).to_have_url(re.compile(r"/talk"))
    result = client.tid("referral-result")
    await expect(result).to_have_text(re.compile(f"You are linked with {NAME}"))
    await assert_fits(client, "linked")
    await client.shot("referral-linked")
    linked = await stage.api("POST", "/v1/me/referral", ("client", "c-ref"), {"code": code})
    assert linked["therapist_id"] == "t-rose"
    # Used once: a reload says nothing more.
    assert await client.page.evaluate("localStorage.getItem('qc.referral')") is None
    await client.page.reload(wait_until="load")
    await expect(client.tid("talk-form")).to_be_visible()
    await expect(result).to_be_hidden()

    # A link with a malformed code is explained, and forgotten.
    other = await stage.open(
        "other", a, "/r/NOT-A-CODE", role="client", sub="c-bad", name="Bo Client", phone=True
    )
    await expect(other.tid("referral-result")).to_be_hidden()  # not even kept: not a code
    other2 = await stage.open(
        "other2", a, "/r/ZZZZZZZZ", role="client", sub="c-bad2", name="Bo Client", phone=True
    )
    await expect(other2.tid("referral-result")).to_have_text(re.compile("not valid"))
    assert await other2.page.evaluate("localStorage.getItem('qc.referral')") is None
    stage.assert_no_page_errors()
