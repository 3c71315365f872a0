"""Structured logging: one JSON object per line, for our logs and uvicorn's.

Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``logger`` and
``event``, plus the ids the caller bound (``request_id``, ``session_id``,
``user_id``, ``conn_id``). :func:`redact` runs last before rendering, on our
lines and on foreign (stdlib) ones alike, and masks every value whose key is in
:data:`DENY` at any depth, so that names, notes, chat text, email addresses,
phone numbers, tokens and secrets cannot reach a log even when someone logs a
whole frame or body by mistake.

Use :func:`get_logger`; it configures logging with the defaults if
:func:`configure` has not run yet, so no line ever bypasses the redaction.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping
from typing import Any, Final, TextIO, TypeAlias

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

Logger: TypeAlias = structlog.stdlib.BoundLogger

#: Keys whose values never reach a log. A key matches when it equals one of
#: these or ends in ``_<one of these>`` (``client_name``, ``access_token``),
#: compared case-insensitively with ``-`` read as ``_``.
DENY: Final = frozenset(
    {
        "token",
        "authorization",
        "notes",
        "note",
        "text",
        "name",
        "bio",
        "body",
        "secret",
        "data_key",
        "password",
        "cookie",
        "credential",
        "email",
        "phone",
        # Care records (PROTOCOL.md §10): a safeguarding concern, a feedback comment.
        "concern",
        "comment",
    }
)
MASK: Final = "[redacted]"

# Third-party loggers that print raw request lines or headers at DEBUG;
# aiosqlite prints every statement with its parameters (names, sealed text).
_CHATTY: Final = ("websockets", "httpcore", "httpx", "hpack", "asyncio", "aiosqlite")
_UVICORN: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
_MAX_DEPTH: Final = 20

_configured = False


def _denied(key: object) -> bool:
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if not isinstance(key, str):
        return False
    k = key.lower().replace("-", "_")
    return k in DENY or any(k.endswith("_" + d) for d in DENY)


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(value, Mapping):
        return {k: MASK if _denied(k) else _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        # ASGI and httpx headers: a sequence of (name, value) pairs.
        if len(items) == 2 and _denied(items[0]) and isinstance(items[1], str | bytes):
            return [items[0], MASK]
        return [_scrub(v, depth + 1) for v in items]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A model object's repr would show every field; log its fields, masked.
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _scrub(fields, depth + 1)
    return value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask every denied key at any depth (see :data:`DENY`)."""
    return {k: MASK if (k != "event" and _denied(k)) else _scrub(v) for k, v in event_dict.items()}


# Attributes every LogRecord has, plus those formatting adds to it (another
# handler may have formatted the record first: ``message`` holds the text with
# the unscrubbed arguments) and uvicorn's coloured duplicate of its message.
_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "color_message", "taskName"}


def _add_extra(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Foreign records: copy what was passed as ``extra=`` into the event."""
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord):
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in event_dict:
                event_dict[key] = value
    return event_dict


class _ScrubQuery(logging.Filter):
    """Cut query strings out of the paths uvicorn logs (a token or a name may
    hide in one); uvicorn formats them from ``record.args``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn") and isinstance(record.args, tuple):
            record.args = tuple(
                a.split("?", 1)[0] + "?[redacted]"
                if isinstance(a, str) and a.startswith("/") and "?" in a
                else a
                for a in record.args
            )
        return True


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time of each line (as the
    stdlib's last-resort handler does), so that a logger configured at import
    time never holds on to a stream that test capture has since closed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(level: str = "info", json: bool = True, stream: TextIO | None = None) -> None:
    """Route structlog and the stdlib (uvicorn included) through one handler on
    ``stream`` (default ``sys.stderr``) that redacts and renders JSON (or, with
    ``json=False``, readable console lines). Calling it again replaces the
    previous setup: it is idempotent.
    """
    global _configured
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    foreign_chain: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
        _add_extra,
    ]
    renderer: Processor
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        final += [structlog.processors.format_exc_info, redact]
        renderer = structlog.processors.JSONRenderer()
    else:
        final += [redact]
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign_chain, processors=[*final, renderer]
    )
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(formatter)
    handler.addFilter(_ScrubQuery())
    handler.set_name("dispatch")

    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "dispatch":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _UVICORN:
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.NOTSET)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            # Here too, not only in the formatter: every other handler (pytest's,
            # an error tracker's) sees the event dict as the record's message.
            redact,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(logger_name: str = "dispatch", /, **bound: Any) -> Logger:
    """A structured logger (stdlib name ``logger_name``) carrying ``bound`` on
    every line: ``get_logger("dispatch.ws", conn_id=cid)``."""
    if not _configured:
        configure()
    logger: Logger = structlog.stdlib.get_logger(logger_name).bind(**bound)
    return logger
