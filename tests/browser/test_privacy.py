"""Records and erasure in a real browser (PROTOCOL.md §10): a client on a
phone 360 px wide downloads its data from /talk (a JSON file holding its
form answers), a therapist from /console; an operator on /ops reads the
client's audit trail, then erases it with a typed confirmation, by keyboard,
and the trail shows the erasure."""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import expect

from .conftest import Stage
from .test_access import assert_fits, tab_to

pytestmark = pytest.mark.integration

REASON = "Browser privacy test: trouble sleeping since the move"
INTAKE = {
    "reason": REASON,
    "emergency_contact_name": "Sam Carter",
    "emergency_contact_phone": "+44 7700 900123",
}


@pytest.mark.timeout(150)
async def test_download_my_data_then_an_operator_erases_the_client(stage: Stage) -> None:
    (a,) = await stage.start(1)
    await stage.therapist("t-priv", "Pat Therapist")
    await stage.api("PUT", "/v1/me/forms/intake", ("client", "c-priv"), INTAKE)

    # The client, on a phone: "Download my data" saves its export.
    client = await stage.talk("client", a, "c-priv", name="Casey Private")
    button = client.tid("mydata-download")
    await expect(button).to_be_visible()
    async with client.page.expect_download() as info:
        await button.click()
    download = await info.value
    assert download.suggested_filename == "dispatch-export-c-priv.json"
    path = await download.path()
    doc = json.loads(path.read_text())
    assert doc["user"]["id"] == "c-priv"
    assert {f["name"]: f["answers"] for f in doc["forms"]}["intake"]["reason"] == REASON
    await expect(client.tid("mydata-status")).to_have_text("Your data has been downloaded.")
    await assert_fits(client, "talk with download")
    await client.shot("mydata-downloaded")

    # The therapist's console has it too.
    alpha = await stage.console("therapist", a, "t-priv")
    async with alpha.page.expect_download() as info:
        await alpha.tid("mydata-download").click()
    mine = json.loads((await (await info.value).path()).read_text())
    assert mine["user"] == {"id": "t-priv", "role": "therapist", "name": None}

    # An operator reads the client's trail: its own export is on it.
    ops = await stage.ops("operator", a)
    await ops.tid("ops-audit-subject").fill("c-priv")
    await ops.tid("ops-audit-go").click()
    await expect(ops.tid("ops-audit-summary")).to_have_text("1 entry for c-priv, oldest first.")
    item = ops.tid("ops-audit-item")
    await expect(item).to_have_count(1)
    await expect(item).to_have_attribute("data-record", "export")
    await expect(item).to_contain_text("client c-priv downloaded their own data")

    # Erasing: the button waits for the id typed a second time, exactly.
    go = ops.tid("ops-erase-go")
    await ops.tid("ops-erase-client").fill("c-priv")
    await expect(go).to_be_disabled()
    await ops.tid("ops-erase-confirm").fill("c-pri")
    await expect(go).to_be_disabled()
    await ops.tid("ops-erase-confirm").fill("c-priv")
    await expect(go).to_be_enabled()
    await tab_to(ops, "ops-erase-go")
    await ops.page.keyboard.press("Enter")
    await expect(ops.tid("ops-erase-result")).to_be_visible()
    await expect(ops.tid("ops-erase-result")).to_contain_text(
        re.compile("Client c-priv was erased by op-browser")
    )
    counts = ops.tid("ops-erase-counts")
    await expect(counts.locator('[data-key="form_answers"]')).to_have_text(
        "form answers deleted: 1"
    )
    await expect(counts.locator('[data-key="data_key"]')).to_have_text("data key destroyed: yes")
    await ops.shot("erased")

    # The trail now ends with the erasure; the client's export has no answers.
    await ops.tid("ops-audit-go").click()
    await expect(item).to_have_count(2)
    await expect(item.nth(1)).to_have_attribute("data-record", "erase")
    await expect(item.nth(1)).to_contain_text("operator op-browser erased this client")
    after = await stage.api("GET", "/v1/me/export", ("client", "c-priv"))
    assert after["forms"] == []
    # A therapist's id is refused, in words.
    await ops.tid("ops-erase-client").fill("t-priv")
    await ops.tid("ops-erase-confirm").fill("t-priv")
    await go.click()
    await expect(ops.tid("ops-erase-error")).to_contain_text("only a client can be erased")
    stage.assert_no_page_errors()
