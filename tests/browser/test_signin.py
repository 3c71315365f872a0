"""The ``--dev`` sign-in page in a real browser: pick a demo user, land on its page.

The page mints the token through ``POST /dev/token`` and hands it to the next page in
the URL fragment, which keeps it in ``sessionStorage`` and clears it from the address
bar.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from .conftest import Stage

pytestmark = pytest.mark.integration


@pytest.mark.timeout(90)
async def test_signin_picks_a_demo_user_and_opens_its_page(stage: Stage) -> None:
    (a,) = await stage.start(1, demo=True)

    therapist = await stage.open("therapist", a, "/")
    users = therapist.tid("signin-user")
    await expect(users.first).to_be_visible()
    await therapist.shot("signin")
    ids = await users.evaluate_all("(els) => els.map((e) => e.dataset.userId)")
    assert "demo-therapist-1" in ids and "demo-operator" in ids, ids

    await therapist.page.locator(
        '[data-testid="signin-user"][data-user-id="demo-therapist-1"]'
    ).click()
    await expect(therapist.page).to_have_url(re.compile(r"/console$"))
    await expect(therapist.tid("status-line")).to_have_attribute("data-state", "open")
    await therapist.go_available()
    assert "token=" not in therapist.page.url
    await therapist.shot("console")

    operator = await stage.open("operator", a, "/")
    await operator.page.locator('[data-testid="signin-user"][data-user-id="demo-operator"]').click()
    await expect(operator.page).to_have_url(re.compile(r"/ops$"))
    await expect(operator.tid("stat-therapists_available")).to_have_text("1")
    await operator.shot("ops")
    stage.assert_no_page_errors()
