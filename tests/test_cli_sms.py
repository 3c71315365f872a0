"""``dispatch sms test --to NUMBER`` (PROTOCOL.md §7): one text through the
configured Twilio account, here a loopback stand-in, run as the real command."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from test_notify_sms import SID, TOKEN, StandIn, twilio

__all__ = ["twilio"]  # the stand-in fixture, used by name below

DISPATCH = Path(sys.executable).with_name("dispatch")


async def _run(*args: str, **env: str) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    proc = await asyncio.create_subprocess_exec(
        str(DISPATCH),
        *args,
        env={**base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _twilio_env(stand_in: StandIn) -> dict[str, str]:
    return {
        "DISPATCH_TWILIO_ACCOUNT_SID": SID,
        "DISPATCH_TWILIO_AUTH_TOKEN": TOKEN,
        "DISPATCH_TWILIO_FROM": "+15005550006",
        "DISPATCH_TWILIO_API_URL": stand_in.url,
        "DISPATCH_PUBLIC_URL": "https://care.example.com",
    }


async def test_sms_test_sends_one_text_and_prints_its_sid(twilio: StandIn) -> None:
    code, out, err = await _run("sms", "test", "--to", "+44 7700 900123", **_twilio_env(twilio))
    assert code == 0, err
    assert out.strip() == "SM" + "1".zfill(32)
    assert len(twilio.received) == 1
    sent = twilio.received[0]
    assert (sent["To"], sent["From"]) == ("+447700900123", "+15005550006")
    assert "test text" in sent["Body"]


async def test_sms_test_reports_a_refusal_and_a_bad_number(twilio: StandIn) -> None:
    twilio.answers = [400]
    code, _, err = await _run("sms", "test", "--to", "+447700900123", **_twilio_env(twilio))
    assert code == 1 and "refused" in err and "HTTP 400" in err
    code, _, err = await _run("sms", "test", "--to", "07700 900123", **_twilio_env(twilio))
    assert code == 2 and "phone" in err
    assert len(twilio.received) == 1  # the bad number never reached Twilio


async def test_sms_test_without_twilio_says_what_to_set() -> None:
    code, _, err = await _run("sms", "test", "--to", "+447700900123")
    assert code == 2 and "DISPATCH_TWILIO_FROM" in err
