"""The operator page's calls (issue #13, extensions): ``GET /v1/pool/live`` and
``GET /v1/pool/history``, on the embedded app with each pool (memory, redis).

The app runs on a clock the test moves, so the stats loop's buckets are known;
the loop itself is real (it turns every 50 ms here) and writes the history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import embedded_settings
from starlette.testclient import TestClient
from test_app_embedded import DRAFT, PROFILE

from core.identity import mint
from dispatch.app import create_app
from dispatch.settings import load_settings

SECRET = "ops-test-secret-" + "z" * 40
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z, the start of a 5 s bucket
OPERATOR = "operator"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Ops:
    http: TestClient
    clock: Clock


@pytest.fixture(params=["memory", "redis"])
def ops(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ops]:
    overrides = embedded_settings(request, tmp_path, secret=SECRET, stats_interval_s=0.05)
    clock = Clock(T0)
    with TestClient(create_app(load_settings(overrides, env={}), clock=clock)) as c:
        yield Ops(c, clock)


def _h(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, role, sub)}"}


def _get(c: TestClient, path: str, role: str = OPERATOR, sub: str = "op") -> Any:
    r = c.get(path, headers=_h(role, sub))
    assert r.status_code == 200, r.text
    return r.json()


def _until(check: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    """Poll ``check`` until it answers something truthy (bounded)."""
    deadline = time.monotonic() + timeout_s
    while not (got := check()):
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.02)
    return got


def _frame(ws: Any, ftype: str, limit: int = 20) -> dict[str, Any]:
    for _ in range(limit):
        frame: dict[str, Any] = ws.receive_json()
        if frame["type"] == ftype:
            return frame
    raise AssertionError(f"no {ftype} frame within {limit} frames")


def test_only_an_operator_may_look(ops: Ops) -> None:
    for path in ("/v1/pool/live", "/v1/pool/history"):
        assert ops.http.get(path).status_code == 401
        for role in ("client", "therapist"):
            r = ops.http.get(path, headers=_h(role, "someone"))
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_live_follows_a_request_from_the_queue_to_a_call(ops: Ops) -> None:
    c = ops.http
    r = c.put("/v1/therapists/t1", json=PROFILE, headers=_h(OPERATOR, "op"))
    assert r.status_code == 201, r.text
    fund = {"client_id": "c1", "amount_minor": 10_000, "reference": "ops-c1"}
    assert c.post("/v1/wallet/topups", json=fund, headers=_h(OPERATOR, "op")).status_code == 201
    assert _get(c, "/v1/pool/live")["therapists"] == []

    with c.websocket_connect("/v1/ws", subprotocols=["qc.v1.json"]) as t:
        t.send_json({"type": "auth", "token": mint(SECRET, "therapist", "t1")})
        _frame(t, "pool.snapshot")
        t.send_json({"type": "status", "available": True})
        _frame(t, "status.ok")
        ops.clock.now = T0 + 3
        r = c.post("/v1/requests", json=DRAFT, headers=_h("client", "c1"))
        assert r.status_code == 201, r.text
        rid = r.json()["request"]["id"]

        live = _get(c, "/v1/pool/live")
        assert live == {
            "at": "2023-11-14T22:13:23.000Z",
            "waiting": [
                {
                    "id": rid,
                    "client_id": "c1",
                    "created_at": "2023-11-14T22:13:23.000Z",
                    "region": "GB-ENG",
                    "language": "en",
                    "topics": ["anxiety"],
                }
            ],
            "waiting_total": 1,
            "claims": [],
            "claims_total": 0,
            "sessions": [],
            "sessions_total": 0,
            "therapists": [{"id": "t1", "name": "Dr Test", "available": True, "busy": False}],
            "therapists_total": 1,
        }
        assert "notes" not in live["waiting"][0]

        t.send_json({"type": "claim", "request_id": rid})
        _frame(t, "claim.ok")
        live = _get(c, "/v1/pool/live")
        assert (live["waiting"], live["waiting_total"]) == ([], 0)
        assert live["claims"] == [
            {
                "request_id": rid,
                "therapist_id": "t1",
                "claimed_at": "2023-11-14T22:13:23.000Z",
                "expires_at": "2023-11-14T22:14:23.000Z",
            }
        ]
        assert live["therapists"][0]["busy"] is True

        with c.websocket_connect("/v1/ws", subprotocols=["qc.v1.json"]) as cl:
            cl.send_json({"type": "auth", "token": mint(SECRET, "client", "c1")})
            _frame(cl, "request.offer")
            cl.send_json({"type": "offer.accept", "request_id": rid, "terms_version": "v1"})
            session = _frame(cl, "session.ready")["session"]
            live = _get(c, "/v1/pool/live")
            assert live["claims"] == []
            assert live["sessions"] == [
                {
                    "id": session["id"],
                    "client_id": "c1",
                    "therapist_id": "t1",
                    "state": "ready",
                    "created_at": "2023-11-14T22:13:23.000Z",
                    "started_at": None,
                }
            ]
            assert live["sessions_total"] == 1


def test_history_keeps_one_sample_per_bucket(ops: Ops) -> None:
    c = ops.http

    def samples() -> list[dict[str, Any]]:
        body = _get(c, "/v1/pool/history")
        assert (body["interval_s"], body["window_s"]) == (5, 900)
        assert body["at"].startswith("2023-11-14T22:")  # the server's time of the answer
        got: list[dict[str, Any]] = body["samples"]
        return got

    (first,) = _until(samples)
    assert first == {
        "at": "2023-11-14T22:13:20.000Z",
        "waiting": 0,
        "claimed": 0,
        "therapists_online": 0,
        "therapists_available": 0,
        "therapists_busy": 0,
        "oldest_wait_s": 0.0,
        "wait_p50_s": None,
        "wait_p95_s": None,
    }
    # Later in the same bucket: still the first sample alone.
    ops.clock.now = T0 + 4
    time.sleep(0.3)
    assert samples() == [first]
    # The next bucket gets its own, with the numbers as they are then.
    fund = {"client_id": "c1", "amount_minor": 10_000, "reference": "ops-h1"}
    assert c.post("/v1/wallet/topups", json=fund, headers=_h(OPERATOR, "op")).status_code == 201
    r = c.post("/v1/requests", json=DRAFT, headers=_h("client", "c1"))
    assert r.status_code == 201, r.text
    ops.clock.now = T0 + 7.5
    second = _until(lambda: samples()[1:])[0]
    assert (second["at"], second["waiting"], second["oldest_wait_s"]) == (
        "2023-11-14T22:13:27.500Z",
        1,
        3.5,
    )
    # Fifteen minutes on, the first bucket has left the history.
    ops.clock.now = T0 + 905
    left = ["2023-11-14T22:13:27.500Z", "2023-11-14T22:28:25.000Z"]
    _until(lambda: [s["at"] for s in samples()] == left)
