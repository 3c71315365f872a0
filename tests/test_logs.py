"""Logging: JSON lines, and nothing private reaches them, at any depth."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from core import logs

PRIVATE = ("Alice Liddell", "I feel anxious", "eyJhbGciOi.secret.token", "hunter2", "s3cr3t")


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buf = io.StringIO()
    yield buf
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    structlog.reset_defaults()
    logs._configured = False


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


@dataclass(frozen=True)
class Chat:
    session_id: str
    text: str


def test_json_lines_carry_timestamp_level_event_and_bound_ids(out: io.StringIO) -> None:
    logs.configure("info", json=True, stream=out)
    logs.get_logger("dispatch.ws", conn_id="c-1").info("claim.ok", request_id="r-1")
    (line,) = lines(out)
    assert line["event"] == "claim.ok" and line["level"] == "info"
    assert line["conn_id"] == "c-1" and line["request_id"] == "r-1"
    assert line["logger"] == "dispatch.ws"
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]


def test_private_values_are_masked_at_any_depth(out: io.StringIO) -> None:
    logs.configure("debug", json=True, stream=out)
    log = logs.get_logger()
    log.info(
        "frame",
        token=PRIVATE[2],
        frame={
            "type": "chat.send",
            "session_id": "s-1",
            "text": PRIVATE[1],
            "nested": [{"notes": PRIVATE[1]}, {"user": {"name": PRIVATE[0], "id": "u-1"}}],
        },
        headers=[(b"authorization", b"Bearer " + PRIVATE[2].encode()), (b"host", b"x")],
        client_name=PRIVATE[0],
        Authorization=f"Bearer {PRIVATE[2]}",
        settings={"secret": PRIVATE[4], "data_key": PRIVATE[4], "password": PRIVATE[3]},
        body={"bio": PRIVATE[0]},
        chat=Chat(session_id="s-1", text=PRIVATE[1]),
    )
    text = out.getvalue()
    for value in PRIVATE:
        assert value not in text
    (line,) = lines(out)
    assert line["frame"]["type"] == "chat.send" and line["frame"]["session_id"] == "s-1"
    assert line["frame"]["text"] == logs.MASK
    assert line["frame"]["nested"][1]["user"] == {"name": logs.MASK, "id": "u-1"}
    assert line["chat"] == {"session_id": "s-1", "text": logs.MASK}
    assert line["token"] == logs.MASK and line["client_name"] == logs.MASK
    assert line["headers"][1] == ["b'host'", "b'x'"]


def test_stdlib_and_uvicorn_lines_are_json_and_scrubbed(out: io.StringIO) -> None:
    logs.configure("info", json=True, stream=out)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", f"/v1/ws?token={PRIVATE[2]}", "1.1", 200
    )
    logging.getLogger("somelib").warning("oops", extra={"note": PRIVATE[1], "count": 3})
    assert PRIVATE[2] not in out.getvalue() and PRIVATE[1] not in out.getvalue()
    access, other = lines(out)
    assert access["logger"] == "uvicorn.access" and access["level"] == "info"
    assert "GET /v1/ws?[redacted]" in access["event"] and "200" in access["event"]
    assert other["event"] == "oops" and other["note"] == logs.MASK and other["count"] == 3


def test_exceptions_are_rendered(out: io.StringIO) -> None:
    logs.configure("info", json=True, stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logs.get_logger().exception("failed", session_id="s-1")
    (line,) = lines(out)
    assert line["level"] == "error" and "RuntimeError: boom" in line["exception"]


def test_configure_is_idempotent_and_sets_the_level(out: io.StringIO) -> None:
    log = logs.get_logger(user_id="u-1")  # taken before configure: still ours
    logs.configure("info", json=True, stream=out)
    logs.configure("warning", json=True, stream=out)
    log.info("hidden")
    log.warning("shown")
    assert [line["event"] for line in lines(out)] == ["shown"]
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "dispatch"]
    assert len(ours) == 1
    logs.configure("debug", json=True, stream=out)
    log.debug("now shown")
    assert [line["event"] for line in lines(out)] == ["shown", "now shown"]


def test_console_renderer_redacts_too(out: io.StringIO) -> None:
    logs.configure("info", json=False, stream=out)
    logs.get_logger().info("hello", name=PRIVATE[0], request_id="r-9")
    text = out.getvalue()
    assert "hello" in text and "r-9" in text and PRIVATE[0] not in text


def test_redact_processor_directly() -> None:
    event = {"event": "x", "Set-Cookie": "a=b", "access_token": "t", "topics": ["anxiety"]}
    assert logs.redact(None, "info", event) == {
        "event": "x",
        "Set-Cookie": logs.MASK,
        "access_token": logs.MASK,
        "topics": ["anxiety"],
    }


def test_other_handlers_see_redacted_events(
    out: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    logs.configure("info", json=True, stream=out)
    with caplog.at_level(logging.INFO):
        logs.get_logger().info("chat.message", session_id="s-1", text=PRIVATE[1])
    assert "s-1" in caplog.text and PRIVATE[1] not in caplog.text


def test_default_stream_follows_sys_stderr(
    out: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs.configure("info", json=True)  # no stream: whatever sys.stderr is when a line is written
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logs.get_logger().info("to stderr", request_id="r-2")
    (line,) = [json.loads(x) for x in later.getvalue().splitlines()]
    assert line["event"] == "to stderr" and line["request_id"] == "r-2"


def test_debug_level_keeps_third_party_wire_loggers_quiet(out: io.StringIO) -> None:
    """At debug, libraries that print request lines or SQL parameters (names,
    sealed text) still log at info at most: their debug lines never appear."""
    logs.configure("debug", json=True, stream=out)
    logging.getLogger("aiosqlite").debug("executing %s with %r", "INSERT", ("Sam Client",))
    logging.getLogger("httpx").debug("request headers %r", {"authorization": "Bearer x"})
    assert "Sam Client" not in out.getvalue()
    assert "Bearer" not in out.getvalue()
    assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.INFO
