"""The ``dispatch`` command: ``dispatch serve`` runs the server, ``dispatch
token`` prints a signed token for demos and tests (PROTOCOL.md §1, §2),
``dispatch keys new|rotate`` makes a data key and re-encrypts chat and notes
under the first key of ``DISPATCH_DATA_KEY``, ``dispatch ledger check`` audits
the wallet's ledger and prints the result as JSON, ``dispatch sms test --to
NUMBER`` sends one text to check the Twilio set-up (PROTOCOL.md §7).

Exit codes: 0 done, 1 the database is unavailable or holds data no key opens,
the ledger does not balance, or Twilio did not take the test text, 2 bad
usage or configuration (the message goes to stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

from core import identity as tokens
from core.identity import Role
from dispatch import demo, devkeys
from dispatch.settings import ConfigError, Settings, load_settings

SUBPROTOCOLS: Final = ("qc.v1.json", "qc.v1.msgpack")
DEMO_TOKEN_TTL_S: Final = 12 * 3600
SMS_TEST_BODY: Final = "quick-connect dispatch: this test text shows texting works."
EXIT_USAGE: Final = 2
EXIT_FAILED: Final = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatch", description="quick-connect dispatch: realtime therapist dispatch"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Flags override DISPATCH_* environment variables.",
    )
    serve.add_argument("--host", help="address to bind (DISPATCH_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (DISPATCH_PORT, default 8000)")
    serve.add_argument(
        "--dev",
        action="store_true",
        default=None,
        help="development: make a random secret and derive a data key if none are set",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        default=None,
        help="seed demo therapists (with --dev, also print demo tokens)",
    )
    serve.add_argument("--redis-url", help="Redis for the pool (DISPATCH_REDIS_URL)")
    serve.add_argument("--database-url", help="durable records (DISPATCH_DATABASE_URL)")
    serve.add_argument("--log-level", help="debug, info, warning, error (DISPATCH_LOG_LEVEL)")

    token = sub.add_parser(
        "token",
        help="print a signed token",
        description="Print an HS256 token signed with --secret or DISPATCH_SECRET.",
    )
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--sub", required=True, help="the user's id: 1..64 of [A-Za-z0-9_.-]")
    token.add_argument("--name", help="display name (optional)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (3600)")
    token.add_argument("--secret", help="signing key (default: $DISPATCH_SECRET)")

    keys = sub.add_parser(
        "keys",
        help="data keys: make one, re-encrypt what is stored under them",
        description="Rotation: put a new key first in DISPATCH_DATA_KEY (KEY_NEW,KEY_OLD) on "
        "every server, run `dispatch keys rotate`, then drop the old key.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_sub.add_parser("new", help="print a fresh data key (a Fernet key)")
    rotate = keys_sub.add_parser(
        "rotate",
        help="re-encrypt every chat message, note, safeguarding concern, feedback "
        "comment and client data key under the first key of DISPATCH_DATA_KEY; "
        "prints how many rows",
    )
    rotate.add_argument(
        "--database-url", help="the database (DISPATCH_DATABASE_URL, default sqlite)"
    )

    ledger = sub.add_parser(
        "ledger",
        help="the wallet's ledger: audit it",
        description="Audit the double-entry ledger of wallets and earnings.",
    )
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    check = ledger_sub.add_parser(
        "check",
        help="check that every transaction balances, no balance is negative and every "
        "balance matches its entries; prints JSON, exits 1 when it does not balance",
    )
    check.add_argument(
        "--database-url", help="the database (DISPATCH_DATABASE_URL, default sqlite)"
    )
    sms = sub.add_parser(
        "sms",
        help="texts through Twilio: check the set-up",
        description="Texts to therapists through Twilio (DISPATCH_TWILIO_*).",
    )
    sms_sub = sms.add_subparsers(dest="sms_command", required=True, metavar="ACTION")
    sms_test = sms_sub.add_parser(
        "test",
        help="send one text to NUMBER with the configured account and sender; prints "
        "Twilio's message SID, exits 1 when Twilio refuses or cannot be reached",
    )
    sms_test.add_argument("--to", required=True, metavar="NUMBER", help="E.164, e.g. +447700900123")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dispatch`` console script and ``python -m dispatch``."""
    args = _parser().parse_args(argv)
    if args.command == "token":
        return _token(args, os.environ)
    if args.command == "keys":
        return _keys(args, os.environ)
    if args.command == "ledger":
        return _ledger_check(args, os.environ)
    if args.command == "sms":
        return _sms_test(args, os.environ)
    return _serve(args, os.environ)


def _fail(message: str) -> int:
    print(f"dispatch: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    secret = args.secret or env.get("DISPATCH_SECRET", "").strip()
    if not secret:
        return _fail("no secret: pass --secret or set DISPATCH_SECRET (the server's key)")
    try:
        print(tokens.mint(secret, args.role, args.sub, name=args.name, ttl_s=args.ttl))
    except ValueError as e:
        return _fail(str(e))
    return 0


def _keys(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from signaling.crypto import new_key

    if args.keys_command == "new":
        print(new_key())
        return 0
    return _keys_rotate(args, env)


def _keys_rotate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import asyncio

    from care.datakeys import DataKeys
    from care.feedback import FeedbackStore
    from care.safeguarding import Safeguarding
    from core.db import Database
    from core.errors import Unavailable
    from signaling.crypto import Cipher, DataKeyError
    from signaling.records import Records

    setting = env.get("DISPATCH_DATA_KEY", "").strip()
    if not setting:
        return _fail("DISPATCH_DATA_KEY is not set: list the new key first, then the old ones")
    url = (
        args.database_url
        or env.get("DISPATCH_DATABASE_URL", "").strip()
        or Settings.database_url  # the dataclass default
    )
    try:
        cipher = Cipher.from_setting(setting)
        db = Database.from_url(url)
    except ValueError as e:
        return _fail(str(e))

    async def rotate() -> int:
        try:
            # The rotation expects the latest schema; bringing it there is
            # what every server does at start-up anyway.
            await db.migrate()
            count = await Records(db, cipher).rotate_keys()
            # Safeguarding concerns (PROTOCOL.md §10) are sealed with the same key.
            count += await Safeguarding(db, cipher).rotate_keys()
            # So are feedback comments.
            count += await FeedbackStore(db, cipher).rotate_keys()
            # And the clients' own data keys (care.datakeys): the records
            # under them stay as they are.
            return count + await DataKeys(db, cipher).rotate_keys()
        finally:
            await db.aclose()

    try:
        count = asyncio.run(rotate())
    except (Unavailable, DataKeyError) as e:
        print(f"dispatch: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(count)
    return 0


def _ledger_check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import asyncio
    import json

    from core.db import Database
    from core.errors import Unavailable
    from wallet.ledger import Ledger

    url = (
        args.database_url
        or env.get("DISPATCH_DATABASE_URL", "").strip()
        or Settings.database_url  # the dataclass default
    )
    try:
        db = Database.from_url(url)
        ledger = Ledger(
            db,
            currency=env.get("DISPATCH_CURRENCY", "").strip() or Settings.currency,
            therapist_share_pct=Settings.therapist_share_pct,
            timezone=Settings.timezone,
        )
    except ValueError as e:
        return _fail(str(e))

    async def check() -> dict[str, Any]:
        try:
            # The audit reads the latest schema, as every server brings it there.
            await db.migrate()
            return await ledger.check()
        finally:
            await db.aclose()

    try:
        result = asyncio.run(check())
    except Unavailable as e:
        print(f"dispatch: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0 if result["balanced"] else EXIT_FAILED


def _sms_test(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import asyncio

    from core.errors import InvalidPhone
    from dispatch import senders
    from notify.phone import normalize_phone
    from notify.sms import TwilioSender
    from notify.worker import Outcome, Sent

    try:
        # Only the Twilio settings matter here: no server secret is needed.
        settings = load_settings({"dev": True}, env)
        to = normalize_phone(args.to)
    except (ConfigError, InvalidPhone) as e:
        return _fail(str(e))
    if not settings.texting:
        return _fail(
            "texting is off: set DISPATCH_TWILIO_ACCOUNT_SID, DISPATCH_TWILIO_AUTH_TOKEN "
            "and DISPATCH_TWILIO_FROM"
        )
    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from

    async def send() -> Outcome:
        sender = TwilioSender(
            settings.twilio_account_sid or "",
            settings.twilio_auth_token or "",
            settings.twilio_from or "",
            api_url=settings.twilio_api_url,
            timeout_s=senders.SEND_TIMEOUT_S,
        )
        try:
            return await sender.send(to, SMS_TEST_BODY)
        finally:
            await sender.aclose()

    outcome = asyncio.run(send())
    if isinstance(outcome, Sent):
        print(outcome.provider_id)
        return 0
    kind = "refused" if type(outcome).__name__ == "Refused" else "failed, try again"
    print(f"dispatch: error: the text was not sent ({kind}): {outcome.reason}", file=sys.stderr)
    return EXIT_FAILED


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "dev": args.dev,
        "demo": args.demo,
        "redis_url": args.redis_url,
        "database_url": args.database_url,
        "log_level": args.log_level,
    }
    kept: devkeys.DevKeys | None = None
    try:
        settings = load_settings(overrides, env)
        if settings.secret_generated:
            # --dev without DISPATCH_SECRET: the keys of the last run, so that
            # tokens, chat and notes survive a restart (dispatch/devkeys.py).
            kept = devkeys.load_or_create(Path(devkeys.DEV_KEYS_FILE))
            overrides["secret"] = kept.secret
            if not env.get("DISPATCH_DATA_KEY", "").strip():
                overrides["data_key"] = kept.data_key
            settings = load_settings(overrides, env)
    except ConfigError as e:
        return _fail(str(e))
    if settings.dev:
        print_banner(settings, sys.stdout, kept)
    run(settings)
    return 0


def run(settings: Settings) -> None:
    """Configure logging and run the app under uvicorn until it is stopped."""
    import uvicorn

    from core import logs
    from dispatch.app import create_app, websocket_first  # late: the app pulls in everything

    logs.configure(settings.log_level, settings.log_json)
    _memory_snapshots_on_signal(settings.tracemalloc_frames)
    uvicorn.Server(uvicorn_config(websocket_first(create_app(settings)), settings)).run()


def _memory_snapshots_on_signal(frames: int) -> None:
    """Where memory goes, for the load tests (``loadtest.idle --tracemalloc``).
    With ``DISPATCH_TRACEMALLOC_FRAMES`` > 0 (0, the default: off; tracing
    costs memory and time), the first ``SIGUSR2`` starts ``tracemalloc``
    (``frames`` deep) and every ``SIGUSR2`` writes a snapshot to
    ``tracemalloc-<pid>-<n>.snap`` in the working directory: allocation sites
    and sizes only, no data. A snapshot's difference from the first is what
    was allocated since and is still held."""
    import signal
    import tracemalloc

    if frames <= 0:
        return
    taken = 0

    def dump(signum: int, frame: object) -> None:
        nonlocal taken
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        taken += 1
        tracemalloc.take_snapshot().dump(f"tracemalloc-{os.getpid()}-{taken}.snap")

    signal.signal(signal.SIGUSR2, dump)


def uvicorn_config(app: Any, settings: Settings) -> Any:
    """The ``uvicorn.Config`` the service runs with: frames over
    ``max_frame_bytes`` close with 1009, pings keep idle sockets honest, a
    request must arrive within ``http_read_timeout_s`` and a process holds at
    most ``max_connections`` (:mod:`dispatch.httpguard`), and
    ``log_config=None`` leaves logging to :mod:`core.logs`; permessage-deflate
    only with ``ws_compression``. Websockets run on
    uvicorn's sans-I/O implementation (its "websockets" one imports
    ``websockets.legacy``, deprecated), lightened by :mod:`dispatch.wsproto`."""
    import uvicorn

    from dispatch.httpguard import guarded_protocol
    from dispatch.wsproto import LeanWebSocketProtocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.http_read_timeout_s, settings.max_connections),
        # uvicorn annotates an int but only hands it to loop.call_later (a float).
        timeout_keep_alive=settings.http_keepalive_s,  # type: ignore[arg-type]
        ws=LeanWebSocketProtocol,
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=settings.ws_compression,
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_timeout_s,
        log_config=None,
        lifespan="on",
        server_header=False,
    )


def print_banner(settings: Settings, out: IO[str], kept: devkeys.DevKeys | None = None) -> None:
    """What ``serve --dev`` prints before it starts: the secret when it was made
    up (``kept``: the file it is kept in across restarts), where to connect,
    and with ``--demo`` a token per demo user.

    Dev only: these are throwaway credentials for a local run.
    """
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    base = f"{shown_host}:{settings.port}"
    lines = ["quick-connect dispatch: development mode (never use --dev in production)"]
    if kept is not None:
        made = "made now and kept" if kept.created else "kept"
        lines += [
            f"  DISPATCH_SECRET={settings.secret}",
            f"    ({made} in {kept.path}, with the data key: tokens, chat and notes",
            "     survive restarts; delete that file, and dispatch.db, to start afresh)",
        ]
    elif settings.secret_generated:
        lines += [
            f"  DISPATCH_SECRET={settings.secret}",
            "    (random for this run: export it to keep tokens valid across restarts;",
            "     the data key is derived from it, so chat and notes stay readable too)",
        ]
    else:
        lines.append("  DISPATCH_SECRET: from the environment")
    lines += [
        f"  HTTP       http://{base}   (GET /healthz, /readyz, /metrics)",
        f"  websocket  ws://{base}/v1/ws   subprotocol {' or '.join(SUBPROTOCOLS)}",
        '             first frame {"type": "auth", "token": "<token>"}',
        "             (or the header Authorization: Bearer <token> on the upgrade)",
        "  more tokens: dispatch token --role client|therapist|operator --sub ID --secret S",
    ]
    if settings.demo:
        hours = DEMO_TOKEN_TTL_S // 3600
        lines += ["", f"demo users (tokens valid {hours} h):"]
        users: list[tuple[Role, str, str | None]] = [
            (Role.THERAPIST, p.id, p.name) for p in demo.DEMO_THERAPISTS
        ]
        users += [
            (Role.CLIENT, cid, f"Demo client {i}") for i, cid in enumerate(demo.DEMO_CLIENTS, 1)
        ]
        users.append((Role.OPERATOR, demo.DEMO_OPERATOR, "Demo operator"))
        for role, sub, name in users:
            tok = tokens.mint(settings.secret, role, sub, name=name, ttl_s=DEMO_TOKEN_TTL_S)
            lines.append(f"  {role.value:<9} {sub:<17} {tok}")
        op = tokens.mint(settings.secret, Role.OPERATOR, demo.DEMO_OPERATOR, ttl_s=3600)
        lines += [
            "",
            "try:",
            f"  curl -H 'Authorization: Bearer {op}' http://{base}/v1/pool/stats",
        ]
    print("\n".join(lines), file=out, flush=True)
