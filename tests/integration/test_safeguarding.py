"""Safeguarding alerts across two servers (PROTOCOL.md §10): a therapist on
server A raises a concern about its session; an operator connected to server
B (and one on A) gets ``safeguarding.alert`` at once, without the concern;
the acknowledgement made on B reaches both as ``safeguarding.acked``."""

from __future__ import annotations

import pytest

from .harness import StartCluster, open_session, token

pytestmark = pytest.mark.integration

CONCERN = "The client described being hit at home"


async def test_an_alert_raised_on_one_server_reaches_operators_on_every_server(
    start_cluster: StartCluster,
) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    op_b = await c.operator(b, "op-b")
    op_a = await c.operator(a, "op-a")
    m = await open_session(c, a, a, "c-sg", "t-sg")
    resp = await c.call(
        a, "POST", f"/v1/sessions/{m.id}/safeguarding", token("therapist", "t-sg"),
        {"concern": CONCERN},
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    alert = resp.json()["alert"]
    for op in (op_b, op_a):
        frame = await op.expect("safeguarding.alert", 10)
        assert frame == {
            "type": "safeguarding.alert",
            "id": alert["id"],
            "session_id": m.id,
            "therapist_id": "t-sg",
            "client_id": "c-sg",
            "raised_at": alert["raised_at"],
        }
    # Another therapist: as if the session did not exist.
    other = await c.call(
        b, "POST", f"/v1/sessions/{m.id}/safeguarding", token("therapist", "t-other"),
        {"concern": CONCERN},
    )  # fmt: skip
    assert other.status_code == 404
    # The operator on B reads it (with the concern) and acknowledges it.
    op_token = token("operator", "op-b")
    read = await c.call(b, "GET", f"/v1/safeguarding/{alert['id']}", op_token)
    assert read.status_code == 200 and read.json()["alert"]["concern"] == CONCERN
    acked = await c.call(b, "POST", f"/v1/safeguarding/{alert['id']}/ack", op_token, {})
    assert acked.status_code == 200, acked.text
    assert acked.json()["alert"]["acked_by"] == "op-b"
    for op in (op_a, op_b):
        frame = await op.expect("safeguarding.acked", 10)
        assert (frame["id"], frame["acked_by"]) == (alert["id"], "op-b")
    listed = await c.call(a, "GET", "/v1/safeguarding?open=true", token("operator", "op-a"))
    assert listed.status_code == 200 and listed.json() == {"alerts": []}
