"""The pool's Lua scripts (``pool/lua/*.lua``), one per atomic step.

Each script's header names its ``KEYS`` and ``ARGV``. A script whose header
says ``uses _lib.lua`` gets the shared helpers of ``_lib.lua`` prepended when
it is loaded. Scripts are registered with ``register_script``: redis-py runs
them by SHA and, on ``NOSCRIPT`` (a restarted or flushed Redis), loads them
again and retries, so the pool heals by itself.

Scripts answer a failed check with a one-element list holding an error code;
:data:`ERRORS` maps each onto the exception (and message) ``pool.rules``
raises in the same situation.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.commands.core import AsyncScript

from core.errors import (
    Busy,
    Conflict,
    DispatchError,
    Forbidden,
    NotEligible,
    NotFound,
    RequestExists,
    Taken,
)
from pool._redis_client import Client
from pool.model import (
    CLIENT_BUSY,
    CLIENT_WAITING,
    HEAD_START,
    IN_SESSION,
    NO_SUCH_SESSION,
    NOT_A_PARTICIPANT,
    NOT_OFFERED,
    SESSION_ID_USED,
    THERAPIST_BUSY,
    TOO_MANY_HELD,
)

_USES_LIB = "-- uses _lib.lua"

#: Error code of a script -> the error (and message) pool.rules raises there.
ERRORS: dict[str, tuple[type[DispatchError], str | None]] = {
    "not_found": (NotFound, "no such request"),
    "id_used": (NotFound, "request id already used"),
    "expired": (NotFound, "the request has expired"),
    "request_exists": (RequestExists, None),
    "in_session": (RequestExists, IN_SESSION),
    "busy": (Busy, None),
    "taken_own": (Taken, "you already hold this claim"),
    "not_eligible": (NotEligible, None),
    "head_start": (NotEligible, HEAD_START),
    "not_offered": (NotEligible, NOT_OFFERED),
    "taken": (Taken, None),
    "forbidden": (Forbidden, "you do not hold a claim on this request"),
    "no_offer": (Taken, "there is no offer on this request"),
    "not_cancellable": (Taken, "the request can no longer be cancelled"),
    "no_session": (NotFound, NO_SUCH_SESSION),
    "not_participant": (Forbidden, NOT_A_PARTICIPANT),
    "too_many_held": (Conflict, TOO_MANY_HELD),
    "session_id_used": (Conflict, SESSION_ID_USED),
    "therapist_busy": (Busy, THERAPIST_BUSY),
    "client_busy": (Busy, CLIENT_BUSY),
    "client_waiting": (RequestExists, CLIENT_WAITING),
}


def error(code: str) -> DispatchError:
    cls, message = ERRORS[code]
    return cls(message)


@cache
def source(name: str) -> str:
    """The Lua source of script ``name``, with the helpers it uses."""
    folder = resources.files("pool") / "lua"
    text = (folder / f"{name}.lua").read_text(encoding="utf-8")
    if _USES_LIB in text:
        text = (folder / "_lib.lua").read_text(encoding="utf-8") + "\n" + text
    return text


def register(client: Client) -> dict[str, AsyncScript]:
    """Every script of ``pool/lua`` (but ``_lib.lua``), registered on ``client``, by name."""
    folder = resources.files("pool") / "lua"
    names = sorted(
        f.name.removesuffix(".lua")
        for f in folder.iterdir()
        if f.name.endswith(".lua") and not f.name.startswith("_")
    )
    return {name: client.register_script(source(name)) for name in names}
