"""Care forms in a real browser (PROTOCOL.md §10): the client's /forms page, the booking
page's ``intake_required`` answer, and the console's "Client forms" view.

- A client on a phone (360 px) tries to book a session, is told to fill in its forms
  first and follows the link (by keyboard); the page draws every form from
  ``GET /v1/forms`` alone, an empty save puts the server's words under each required
  field, a bad phone number under its own; once every form is done the page returns to
  the booking, and the session books. The therapist's Bookings section opens the
  client's forms: every answer and the consent record, with its version.
- A consent whose terms changed (the server's status, rewritten in the page's traffic)
  asks to be agreed to again: its boxes unticked, the other answers still filled in.
- A minor's quick-connect request with a guardian's consent: in the call the therapist
  opens "Client forms" and sees that consent with its version and time.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import pytest
from playwright.async_api import Page, Route, ViewportSize, expect

from .conftest import Person, Stage
from .test_access import assert_fits, tab_to
from .test_booking import all_week, press
from .test_call import ALPHA

pytestmark = pytest.mark.integration

THERAPIST: Final = ("therapist", "t-alpha")
MARKER: Final = "Browser forms marker: trouble sleeping since the move."
NARROW: Final[ViewportSize] = {"width": 360, "height": 780}


def sample(field: dict[str, Any], *, marker: str = MARKER) -> Any:
    """A valid answer for ``field``, by its type."""
    kind = field["type"]
    if kind == "bool":
        return True
    if kind == "choice":
        first = field["options"][0]
        return first["value"] if isinstance(first, dict) else first
    return {
        "long_text": marker,
        "date": "1990-04-02",
        "phone": "+44 7700 900123",
        "email": "someone@example.org",
    }.get(kind, "Sam Example")


async def definitions(stage: Stage, client_id: str) -> list[dict[str, Any]]:
    data = await stage.api("GET", "/v1/forms", ("client", client_id))
    forms: list[dict[str, Any]] = data["forms"]
    assert {"intake", "consent", "billing"} <= {f["name"] for f in forms}
    return forms


async def fill_all_by_api(stage: Stage, client_id: str) -> list[dict[str, Any]]:
    """Every form filled in with :func:`sample` answers (``PUT /v1/me/forms/{name}``)."""
    forms = await definitions(stage, client_id)
    for form in forms:
        body = {f["key"]: sample(f) for f in form["fields"]}
        await stage.api("PUT", f"/v1/me/forms/{form['name']}", ("client", client_id), body)
    return forms


async def fill_on_page(person: Person, form: dict[str, Any]) -> None:
    """Type :func:`sample` answers into the page's fields of ``form``; tick boxes by Space."""
    for field in form["fields"]:
        control = person.tid(f"field-{form['name']}-{field['key']}")
        value = sample(field)
        if field["type"] == "bool":
            if not await control.is_checked():
                await control.focus()
                await person.page.keyboard.press("Space")
            await expect(control).to_be_checked()
        elif field["type"] == "choice":
            await control.select_option(str(value))
        else:
            await control.fill(str(value))


@pytest.mark.timeout(180)
async def test_a_client_fills_its_forms_before_booking_and_the_therapist_reads_them(
    stage: Stage,
) -> None:
    (a,) = await stage.start(1)
    await stage.therapist("t-alpha", ALPHA)
    await all_week(stage)
    await stage.fund("c-lee", amount_minor=50_000)
    forms = await definitions(stage, "c-lee")
    by_name = {f["name"]: f for f in forms}

    # A session without forms: refused in words, with a link to the forms and back.
    client = await stage.open(
        "client", a, "/book/t-alpha", role="client", sub="c-lee", name="Lee Client", phone=True
    )
    await client.page.set_viewport_size(NARROW)
    await expect(client.tid("book-type-session")).to_be_checked()
    await expect(client.tid("book-forms-note")).to_contain_text("fill in your forms")
    await client.tid("slot").first.check()
    await client.tid("book-confirm").click()
    result = client.tid("book-result")
    await expect(result).to_contain_text("please fill in your forms")
    await expect(result).to_be_focused()
    await expect(client.tid("book-forms-link")).to_be_visible()
    await assert_fits(client, "intake required at 360 px")
    await client.shot("intake-required")
    await press(client, "book-forms-link")
    await client.page.wait_for_url(re.compile(r"/forms\?next=%2Fbook%2Ft-alpha$"))

    # The forms page: every form, all still to fill, drawn from the definitions.
    await expect(client.tid("form-status")).to_have_count(len(forms))
    for form in forms:
        status = client.page.locator(f'[data-testid="form-status"][data-form="{form["name"]}"]')
        await expect(status).to_have_attribute("data-state", "missing")
        await expect(client.tid(f"form-{form['name']}")).to_be_visible()
        for field in form["fields"]:
            await expect(client.tid(f"field-{form['name']}-{field['key']}")).to_be_visible()
    await expect(client.tid("forms-summary")).to_contain_text(f"{len(forms)} forms to fill in")
    await expect(client.tid("forms-back")).to_have_attribute("href", "/book/t-alpha")
    await assert_fits(client, "forms at 360 px")
    await client.shot("forms-empty")

    # Saving the intake empty: the server's words under each required field, the focus
    # on the first; a bad phone number is refused under its own field.
    intake = by_name["intake"]
    required = [f for f in intake["fields"] if f["required"]]
    assert required, intake
    phone = next((f for f in intake["fields"] if f["type"] == "phone"), None)
    if phone is not None:
        await client.tid(f"field-intake-{phone['key']}").fill("12")
    await client.tid("form-save-intake").click()
    for field in required:
        error = client.tid(f"field-error-intake-{field['key']}")
        await expect(error).to_be_visible()
        await expect(error).not_to_be_empty()
        await expect(client.tid(f"field-intake-{field['key']}")).to_have_attribute(
            "aria-invalid", "true"
        )
    await expect(client.tid(f"field-intake-{required[0]['key']}")).to_be_focused()
    await expect(client.tid("form-result-intake")).to_contain_text("Not saved")
    await assert_fits(client, "field errors at 360 px")
    await client.shot("intake-errors")

    # Filled in properly and saved by keyboard, form after form; each save moves the focus
    # to the next form still to fill.
    for i, form in enumerate(forms):
        await fill_on_page(client, form)
        await client.tid(f"field-{form['name']}-{form['fields'][-1]['key']}").focus()
        await press(client, f"form-save-{form['name']}")
        for field in form["fields"]:
            await expect(client.tid(f"field-error-{form['name']}-{field['key']}")).to_be_hidden()
        if i + 1 < len(forms):
            status = client.page.locator(f'[data-testid="form-status"][data-form="{form["name"]}"]')
            await expect(status).to_have_attribute("data-state", "done")
            await expect(client.page.locator(f"#fm-title-{forms[i + 1]['name']}")).to_be_focused()
    # The last one saved: back to the booking page.
    await client.page.wait_for_url(re.compile(r"/book/t-alpha$"))
    mine = await stage.api("GET", "/v1/me/forms", ("client", "c-lee"))
    assert mine["complete"] is True, mine
    assert {f["name"]: f["state"] for f in mine["forms"]} == {f["name"]: "done" for f in forms}

    # Now the session books; the note about the forms is gone.
    await expect(client.tid("slot").first).to_be_visible()
    await expect(client.tid("book-forms-note")).to_be_hidden()
    await client.tid("slot").first.check()
    await press(client, "book-confirm")
    await expect(result).to_contain_text("Booked for")
    await client.shot("booked-after-forms")

    # The forms page again, from /talk's "Your forms": all done, the answers there to change.
    await client.page.goto(f"{a.url}/talk")
    await expect(client.tid("forms-link")).to_be_visible()
    await client.tid("forms-link").click()
    await client.page.wait_for_url(re.compile(r"/forms$"))
    await expect(client.tid("forms-summary")).to_contain_text("All your forms are done")
    long_text = next(f for f in intake["fields"] if f["type"] == "long_text")
    await expect(client.tid(f"field-intake-{long_text['key']}")).to_have_value(MARKER)

    # The therapist: Bookings, then "Client forms" on the booking, by keyboard.
    alpha = await stage.console("t-alpha", a, "t-alpha")
    await expect(alpha.tid("bookings-open")).to_be_visible()
    await press(alpha, "bookings-open", backwards=True)
    await expect(alpha.tid("booking")).to_have_count(1)
    await tab_to(alpha, "booking-client-forms")
    await alpha.page.keyboard.press("Enter")
    view = alpha.tid("clientforms-view")
    await expect(view).to_be_visible()
    await expect(alpha.tid("clientforms-title")).to_be_focused()
    await expect(alpha.tid("clientforms-title")).to_have_text("Forms of client c-lee")
    shown = alpha.tid("clientforms-form")
    await expect(shown).to_have_count(len(forms))
    for form in forms:
        part = view.locator(f'[data-testid="clientforms-form"][data-form="{form["name"]}"]')
        await expect(part).to_have_attribute("data-state", "done")
        await expect(part).to_contain_text(f"Version {form['version']}")
        await expect(part.get_by_test_id("clientforms-answer")).to_have_count(len(form["fields"]))
    reason = view.locator(f'[data-testid="clientforms-answer"][data-key="{long_text["key"]}"]')
    await expect(reason).to_contain_text(MARKER)
    await expect(reason).to_contain_text(long_text["label"])
    born = next(f for f in intake["fields"] if f["type"] == "date")
    await expect(
        view.locator(f'[data-testid="clientforms-answer"][data-key="{born["key"]}"]')
    ).to_contain_text("2 April 1990")
    consent = alpha.page.locator('[data-testid="clientforms-consent"][data-kind="consent"]')
    await expect(consent).to_have_count(1)
    await expect(consent).to_contain_text(f"version {by_name['consent']['version']}")
    await alpha.page.set_viewport_size(NARROW)
    await assert_fits(alpha, "client forms at 360 px")
    await alpha.shot("client-forms")
    await alpha.tid("clientforms-back").click()
    await expect(alpha.tid("bookings-view")).to_be_visible()
    await expect(alpha.tid("booking-client-forms")).to_be_focused()
    stage.assert_no_page_errors()


@pytest.mark.timeout(120)
async def test_a_changed_consent_is_agreed_to_again(stage: Stage) -> None:
    (a,) = await stage.start(1)
    forms = await fill_all_by_api(stage, "c-oli")
    consent = next(f for f in forms if f["name"] == "consent")
    intake = next(f for f in forms if f["name"] == "intake")
    outdated = {"on": True}

    async def rewrite(route: Route) -> None:
        """``GET /v1/me/forms`` as after a new version of the consent terms."""
        response = await route.fetch()
        body = await response.json()
        if outdated["on"] and route.request.method == "GET":
            for f in body["forms"]:
                if f["name"] == "consent":
                    f["state"] = "outdated"
            body["complete"] = False
        await route.fulfill(response=response, body=json.dumps(body))

    async def before(page: Page) -> None:
        await page.route(re.compile(r"/v1/me/forms$"), rewrite)

    client = await stage.open(
        "client",
        a,
        "/forms",
        role="client",
        sub="c-oli",
        name="Oli",
        phone=True,
        before_load=before,
    )
    await client.page.set_viewport_size(NARROW)
    status = client.page.locator('[data-testid="form-status"][data-form="consent"]')
    await expect(status).to_have_attribute("data-state", "outdated")
    await expect(status).to_contain_text("agree again")
    await expect(client.tid("form-state-consent")).to_contain_text("agree again")
    await expect(client.tid("forms-summary")).to_contain_text("1 form to fill in")
    for field in consent["fields"]:
        if field["type"] == "bool":
            await expect(client.tid(f"field-consent-{field['key']}")).not_to_be_checked()
    long_text = next(f for f in intake["fields"] if f["type"] == "long_text")
    await expect(client.tid(f"field-intake-{long_text['key']}")).to_have_value(MARKER)
    await assert_fits(client, "agree again at 360 px")
    await client.shot("agree-again")

    outdated["on"] = False
    await fill_on_page(client, consent)
    await press(client, "form-save-consent")
    await expect(status).to_have_attribute("data-state", "done")
    await expect(client.tid("forms-summary")).to_contain_text("All your forms are done")
    stage.assert_no_page_errors()


@pytest.mark.timeout(150)
async def test_a_therapist_sees_a_guardian_consent_from_the_call(stage: Stage) -> None:
    (a,) = await stage.start(1)
    await stage.therapist("t-alpha", ALPHA, works_with_minors=True)
    await stage.fund("c-mia")
    consent_version = next(
        f["version"] for f in await definitions(stage, "c-mia") if f["name"] == "consent"
    )
    alpha = await stage.console("t-alpha", a, "t-alpha")
    await alpha.go_available()
    client = await stage.talk("client", a, "c-mia", name="Mia Young")
    await expect(client.tid("talk-form")).to_be_visible()
    await client.tid("topic-anxiety").check()
    await client.tid("age-input").fill("15")
    await client.tid("guardian-consent").check()
    await client.tid("talk-now").click()
    await expect(alpha.tid("request-item")).to_have_count(1)
    await alpha.tid("request-item").get_by_test_id("accept-button").click()
    await client.tid("terms-checkbox").check()
    await client.tid("accept-offer").click()
    await expect(alpha.tid("call-view")).to_be_visible()

    given = await stage.api("GET", "/v1/clients/c-mia/forms", THERAPIST)
    [guardian] = [c for c in given["consents"] if c["kind"] == "guardian"]
    assert guardian["version"] == consent_version, guardian
    assert guardian["about_id"], guardian

    await tab_to(alpha, "call-client-forms")
    await alpha.page.keyboard.press("Enter")
    await expect(alpha.tid("clientforms-view")).to_be_visible()
    record = alpha.page.locator('[data-testid="clientforms-consent"][data-kind="guardian"]')
    await expect(record).to_have_count(1)
    await expect(record).to_contain_text("parent or guardian")
    await expect(record).to_contain_text(f"version {consent_version}")
    await expect(record).to_contain_text(guardian["about_id"])
    await expect(record).to_contain_text(re.compile(r"on \w{3} \d{1,2} \w{3}.* \d{2}:\d{2}"))
    await expect(alpha.tid("clientforms-title")).to_have_text("Forms of Mia")
    await expect(alpha.tid("clientforms-form").first).to_have_attribute("data-state", "missing")
    await alpha.shot("guardian-consent")
    await expect(alpha.tid("clientforms-back")).to_have_text("Back to the call")
    await alpha.tid("clientforms-back").click()
    await expect(alpha.tid("call-view")).to_be_visible()
    await expect(alpha.tid("call-client-forms")).to_be_focused()
    stage.assert_no_page_errors()
