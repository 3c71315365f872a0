"""The therapist's own profile on the console (PROTOCOL.md §7), in a real browser.

- edit and save: reached by keyboard (Tab to "Profile", Enter), the therapist edits
  name, bio, phone (typed with spaces), email, texts on, time zone, quiet hours
  22:00-07:00 and "accepting new clients" off. A bad phone first: the server's
  message stands beside the phone field and nothing is saved, not even the other
  fields. Fixed, it saves ("Saved") and shows the phone as the server normalised it.
- photo: a PNG made on disk is previewed before it is uploaded; once uploaded the
  profile's photo shows the new URL and really loads; the URL needs no token.
- over HTTP (an operator's token) the profile holds every change; a reload shows them.
- at 360 px wide the section needs no sideways scrolling; every text has contrast.
- a therapist without a profile reads a plain sentence instead of a form.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import httpx
import pytest
from PIL import Image
from playwright.async_api import expect

from .conftest import Person, Stage
from .test_access import assert_fits, tab_to

pytestmark = pytest.mark.integration

NAME: Final = "Dr Pat Browser"
OPERATOR: Final = ("operator", "op-browser")


async def description(person: Person, test_id: str) -> str:
    """The text of every element that ``test_id``'s ``aria-describedby`` names."""
    text: str = await person.tid(test_id).evaluate(
        """(el) => (el.getAttribute("aria-describedby") || "").split(/\\s+/)
             .map((id) => document.getElementById(id))
             .filter((d) => d && !d.hidden)
             .map((d) => d.textContent.trim()).join(" | ")"""
    )
    return text


@pytest.mark.timeout(150)
async def test_a_therapist_edits_its_own_profile(stage: Stage, tmp_path: Path) -> None:
    (a,) = await stage.start(1)
    await stage.therapist("t-pat", NAME)
    pat = await stage.console("t-pat", a, "t-pat", name=NAME)
    await expect(pat.tid("status-line")).to_have_attribute("data-state", "open")

    # By keyboard: Tab to "Profile", Enter; the section opens with its heading focused.
    await tab_to(pat, "profile-open")
    await pat.page.keyboard.press("Enter")
    view = pat.tid("profile-view")
    await expect(view).to_be_visible()
    await expect(pat.page.locator("#profile-title")).to_be_focused()
    await expect(pat.tid("request-list")).to_be_hidden()
    await expect(pat.tid("profile-name")).to_have_value(NAME)
    await expect(pat.tid("profile-bio")).to_have_value("Browser-test therapist.")
    await expect(pat.tid("profile-phone")).to_have_value("")
    await expect(pat.tid("profile-sms")).not_to_be_checked()
    await expect(pat.tid("profile-timezone")).to_have_value("UTC")
    await expect(pat.tid("profile-quiet-none")).to_be_checked()
    await expect(pat.tid("profile-quiet-from")).to_be_disabled()
    await expect(pat.tid("profile-accepting")).to_be_checked()
    await expect(pat.tid("profile-photo")).to_be_hidden()
    # The credentials, read-only.
    await expect(view).to_contain_text("Set by the service's operators")
    await expect(view).to_contain_text("GB-ENG")
    await expect(view).to_contain_text("anxiety, stress")
    await pat.shot("profile-loaded")

    # The name by keyboard, then the rest; the phone is a local number (no +44).
    await tab_to(pat, "profile-name")
    await pat.page.keyboard.press("Control+A")
    await pat.page.keyboard.type("Dr Pat Edited")
    await pat.tid("profile-bio").fill("Evenings and weekends.\n<b>Not bold</b>, just text.")
    await pat.tid("profile-phone").fill("07700 900123")
    await pat.tid("profile-email").fill("pat@example.com")
    await pat.tid("profile-sms").check()
    # The device's zone, by its button, then another one from the list.
    device_zone: str = await pat.page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    await pat.page.get_by_role("button", name=re.compile("this device's time zone")).click()
    await expect(pat.tid("profile-timezone")).to_have_value(device_zone)
    await pat.tid("profile-timezone").select_option("America/New_York")
    await pat.tid("profile-quiet-none").uncheck()
    await pat.tid("profile-quiet-from").fill("22:00")
    await pat.tid("profile-quiet-to").fill("07:00")
    await pat.tid("profile-accepting").uncheck()

    # A bad phone: the server's message beside the phone field, nothing saved.
    await pat.tid("profile-save").click()
    phone = pat.tid("profile-phone")
    await expect(phone).to_have_attribute("aria-invalid", "true")
    await expect(phone).to_be_focused()
    await expect(pat.page.locator("#profile-phone-error")).to_contain_text("E.164")
    assert "E.164" in await description(pat, "profile-phone")
    await expect(pat.tid("profile-error")).to_contain_text("Nothing was saved")
    await expect(pat.tid("profile-saved")).to_be_hidden()
    await pat.shot("bad-phone")
    stored = await stage.api("GET", "/v1/therapists/t-pat", OPERATOR)
    assert stored["name"] == NAME
    assert stored["phone"] is None
    assert stored["sms_opt_in"] is False
    assert stored["quiet_hours"] is None
    assert stored["accepting_new_clients"] is True

    # Fixed (typed with spaces): saved, and shown as the server normalised it.
    await phone.fill("+44 7700 900123")
    await expect(phone).not_to_have_attribute("aria-invalid", "true")
    await pat.tid("profile-save").click()
    await expect(pat.tid("profile-saved")).to_be_visible()
    await expect(pat.tid("profile-saved")).to_have_text("Saved")
    await expect(pat.tid("profile-error")).to_be_hidden()
    await expect(phone).to_have_value("+447700900123")
    await expect(pat.tid("profile-quiet-from")).to_have_value("22:00")
    await expect(pat.tid("profile-quiet-to")).to_have_value("07:00")
    await pat.shot("saved")

    # The photo: a PNG made on disk; previewed before upload, shown after it.
    png = tmp_path / "portrait.png"
    Image.new("RGB", (120, 90), (40, 110, 170)).save(png, format="PNG")
    await pat.tid("profile-photo-input").set_input_files(png)
    preview = pat.tid("profile-photo-preview")
    await expect(preview).to_be_visible()
    await expect(preview).to_have_attribute("src", re.compile(r"^blob:"))
    await pat.page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=profile-photo-preview]');"
        " return i.complete && i.naturalWidth === 120; }"
    )
    await expect(pat.tid("profile-photo")).to_be_hidden()  # nothing uploaded yet
    await pat.shot("photo-preview")
    await pat.tid("profile-photo-upload").click()
    photo = pat.tid("profile-photo")
    await expect(photo).to_be_visible()
    await expect(photo).to_have_attribute("src", re.compile(r"^/v1/therapists/t-pat/photo\?v=\w+"))
    await pat.page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=profile-photo]');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    await expect(preview).to_be_hidden()
    await pat.shot("photo-uploaded")

    # Over HTTP: the profile holds every change.
    stored = await stage.api("GET", "/v1/therapists/t-pat", OPERATOR)
    assert stored["name"] == "Dr Pat Edited"
    assert stored["bio"] == "Evenings and weekends.\n<b>Not bold</b>, just text."
    assert stored["phone"] == "+447700900123"
    assert stored["email"] == "pat@example.com"
    assert stored["sms_opt_in"] is True
    assert stored["timezone"] == "America/New_York"
    assert stored["quiet_hours"] == "22:00-07:00"
    assert stored["accepting_new_clients"] is False
    assert stored["regions"] == ["GB-ENG"]  # credentials untouched
    photo_src = await photo.get_attribute("src")
    assert stored["photo_url"] == photo_src
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
        got = await http.get(stored["photo_url"])  # no token
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/png"

    # At 360 px wide nothing reaches past the right edge; every text has contrast.
    await pat.page.set_viewport_size({"width": 360, "height": 780})
    await expect(view).to_be_visible()
    await assert_fits(pat, "profile at 360 px")
    await pat.shot("narrow")

    # Back to the requests, then a reload shows what is stored.
    await pat.page.get_by_role("button", name="Back to the requests").click()
    await expect(view).to_be_hidden()
    await expect(pat.tid("request-list")).to_be_attached()
    await expect(pat.tid("profile-open")).to_be_focused()
    await pat.page.reload(wait_until="load")
    await pat.tid("profile-open").click()
    await expect(pat.tid("profile-name")).to_have_value("Dr Pat Edited")
    await expect(pat.tid("profile-phone")).to_have_value("+447700900123")
    await expect(pat.tid("profile-email")).to_have_value("pat@example.com")
    await expect(pat.tid("profile-sms")).to_be_checked()
    await expect(pat.tid("profile-timezone")).to_have_value("America/New_York")
    await expect(pat.tid("profile-quiet-none")).not_to_be_checked()
    await expect(pat.tid("profile-quiet-from")).to_have_value("22:00")
    await expect(pat.tid("profile-quiet-to")).to_have_value("07:00")
    await expect(pat.tid("profile-accepting")).not_to_be_checked()
    await expect(pat.tid("profile-photo")).to_have_attribute("src", photo_src or "")
    stage.assert_no_page_errors()


@pytest.mark.timeout(90)
async def test_a_therapist_without_a_profile_reads_why(stage: Stage) -> None:
    (a,) = await stage.start(1)
    newcomer = await stage.console("t-new", a, "t-new", name="Dr New")
    await newcomer.tid("profile-open").click()
    await expect(newcomer.tid("profile-view")).to_be_visible()
    await expect(newcomer.tid("profile-missing")).to_contain_text("no profile yet")
    await expect(newcomer.tid("profile-name")).to_be_hidden()
    await expect(newcomer.tid("profile-error")).to_be_hidden()
    await newcomer.shot("no-profile")
    stage.assert_no_page_errors()
