"""HTTP calls of the wallet and earnings (PROTOCOL.md §6).

* ``GET /v1/wallet`` (client): ``{"balance_minor", "held_minor", "currency"}``
  (``held_minor``: what booked sessions hold of the balance, PROTOCOL.md §8;
  the balance still counts it, the client may spend the rest), and what the
  pages need around it (additions to the protocol): ``price_per_minute_minor``,
  ``min_balance_minor`` (below it a request is refused), ``topup_min_minor``,
  ``topup_max_minor`` and ``payments`` (``card``, ``test`` or ``off``: how a
  top-up is paid, PROTOCOL.md §9).
* ``POST /v1/wallet/topups`` (operator): body ``client_id``, ``amount_minor``,
  ``reference``; 201 ``{"transaction": ...}``, 200 with the first answer on a
  replay of the reference.
* ``GET /v1/transactions`` (client, therapist): ``{"transactions": [...]}``,
  newest first.
* ``GET /v1/earnings`` (therapist): ``available_minor``, ``withdrawing_minor``,
  ``paid_out_minor`` (and ``currency``).
* ``POST /v1/withdrawals`` (therapist): body ``amount_minor``; 201
  ``{"withdrawal": W}``.
* ``GET /v1/withdrawals`` (therapist, operator; an addition to the protocol):
  ``{"withdrawals": [W, ...], "currency"}`` newest first.
* ``POST /v1/withdrawals/{id}/invoice`` and ``.../paid`` (operator): 200
  ``{"withdrawal": W}``.
* ``GET /v1/ledger/check`` (operator): the audit of :meth:`Ledger.check`.

A therapist sees only its own withdrawals; an operator sees all of them and
may filter with ``?therapist_id=`` and ``?state=``. ``GET /v1/transactions``
and ``GET /v1/withdrawals`` take an optional ``?limit=`` (1..1000); without it
they answer everything.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.errors import BadInput, InvalidField
from core.identity import Role
from core.validation import parse_json_body, validate_id
from dispatch.routes import ctx_of, signed_in
from notify.email import withdrawal_email
from wallet.billing import min_balance_minor
from wallet.ledger import (
    AlsoInTxn,
    Ledger,
    Withdrawal,
    WithdrawalState,
    check_amount,
    check_reference,
    check_user_id,
    client_account,
)

__all__ = ["ROUTES"]

_MAX_LIMIT: Final = 1000


def _ledger(request: HttpRequest) -> Ledger:
    """``ctx_of(request).ledger``, read through the untyped app state so that
    this module type-checks with any context that carries a ``ledger``."""
    ledger: Ledger = request.app.state.ctx.ledger
    return ledger


async def _object(request: HttpRequest) -> dict[str, Any]:
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    return body


def _limit(request: HttpRequest) -> int | None:
    raw = request.query_params.get("limit")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= _MAX_LIMIT:
        raise InvalidField(f"limit must be a whole number from 1 to {_MAX_LIMIT}", field="limit")
    return int(raw)


def _withdrawal_id(request: HttpRequest) -> str:
    return validate_id(request.path_params["withdrawal_id"], "withdrawal id")


async def get_wallet(request: HttpRequest) -> Response:
    user = signed_in(request, Role.CLIENT)
    ledger = _ledger(request)
    settings = ctx_of(request).settings
    balance = await ledger.balance(user.id)
    held = await ledger.held(user.id)
    return JSONResponse(
        {
            "balance_minor": balance,
            "held_minor": held,
            "currency": ledger.currency,
            "price_per_minute_minor": settings.price_per_minute_minor,
            "min_balance_minor": min_balance_minor(
                settings.price_per_minute_minor, settings.min_balance_minutes
            ),
            "topup_min_minor": settings.topup_min_minor,
            "topup_max_minor": settings.topup_max_minor,
            "payments": settings.payments,
        }
    )


async def post_topup(request: HttpRequest) -> Response:
    signed_in(request, Role.OPERATOR)
    body = await _object(request)
    client_id = check_user_id(body.get("client_id"), "client_id")
    amount = check_amount(body.get("amount_minor"))
    reference = check_reference(body.get("reference"))
    txn = await _ledger(request).topup(client_id, amount, reference, ctx_of(request).clock())
    if not txn.replayed:
        # A top-up during a call moves its end: the money now lasts longer.
        await ctx_of(request).metering.replan(client_id)
    out = {
        "transaction": {
            **txn.view(client_account(client_id)),
            "client_id": client_id,
            "reference": txn.reference,
        }
    }
    if txn.replayed:
        return JSONResponse(out, status_code=200, headers={"Idempotent-Replayed": "true"})
    return JSONResponse(out, status_code=201)


async def get_transactions(request: HttpRequest) -> Response:
    user = signed_in(request, Role.CLIENT, Role.THERAPIST)
    limit = _limit(request)
    entries = await _ledger(request).transactions(user.id, user.role, limit=limit)
    return JSONResponse({"transactions": entries})


async def get_earnings(request: HttpRequest) -> Response:
    user = signed_in(request, Role.THERAPIST)
    ledger = _ledger(request)
    earnings = await ledger.earnings(user.id)
    return JSONResponse({**earnings, "currency": ledger.currency})


async def post_withdrawal(request: HttpRequest) -> Response:
    user = signed_in(request, Role.THERAPIST)
    body = await _object(request)
    amount = check_amount(body.get("amount_minor"))
    withdrawal = await _ledger(request).request_withdrawal(user.id, amount, ctx_of(request).clock())
    return JSONResponse({"withdrawal": withdrawal.public()}, status_code=201)


async def list_withdrawals(request: HttpRequest) -> Response:
    user = signed_in(request, Role.THERAPIST, Role.OPERATOR)
    params = request.query_params
    therapist_id: str | None = user.id
    if user.role is Role.OPERATOR:
        raw = params.get("therapist_id")
        therapist_id = None if raw is None else check_user_id(raw, "therapist_id")
    state: WithdrawalState | None = None
    raw_state = params.get("state")
    if raw_state is not None:
        try:
            state = WithdrawalState(raw_state)
        except ValueError:
            allowed = ", ".join(s.value for s in WithdrawalState)
            raise InvalidField(f"state must be one of {allowed}", field="state") from None
    ledger = _ledger(request)
    found = await ledger.withdrawals(therapist_id=therapist_id, state=state, limit=_limit(request))
    return JSONResponse({"withdrawals": [w.public() for w in found], "currency": ledger.currency})


async def post_invoice(request: HttpRequest) -> Response:
    """Schedules the payout; with emails on, the therapist's "withdrawal
    scheduled" email is queued in the same transaction (PROTOCOL.md §7)."""
    ctx = ctx_of(request)
    signed_in(request, Role.OPERATOR)
    wid = _withdrawal_id(request)
    also: AlsoInTxn | None = None
    if ctx.mail is not None and ctx.settings.public_url is not None:
        current = await ctx.ledger.withdrawal(wid)
        profile = await ctx.store.get_profile(current.therapist_id)
        name = profile.name if profile is not None else ""
        public_url = ctx.settings.public_url

        async def queue_email(conn: AsyncConnection, scheduled: Withdrawal) -> None:
            assert scheduled.payout_date is not None
            email = withdrawal_email(
                scheduled.id,
                scheduled.therapist_id,
                scheduled.amount_minor,
                ctx.settings.currency,
                scheduled.payout_date.isoformat(),
                name,
                public_url,
            )
            await ctx.outbox.queue(conn, [email], ctx.clock())

        also = queue_email
    withdrawal = await ctx.ledger.invoice_received(wid, ctx.clock(), also=also)
    return JSONResponse({"withdrawal": withdrawal.public()})


async def post_paid(request: HttpRequest) -> Response:
    signed_in(request, Role.OPERATOR)
    wid = _withdrawal_id(request)
    withdrawal = await _ledger(request).mark_paid(wid, ctx_of(request).clock())
    return JSONResponse({"withdrawal": withdrawal.public()})


async def ledger_check(request: HttpRequest) -> Response:
    signed_in(request, Role.OPERATOR)
    return JSONResponse(await _ledger(request).check())


ROUTES: Final = [
    Route("/v1/wallet", get_wallet, methods=["GET"]),
    Route("/v1/wallet/topups", post_topup, methods=["POST"]),
    Route("/v1/transactions", get_transactions, methods=["GET"]),
    Route("/v1/earnings", get_earnings, methods=["GET"]),
    Route("/v1/withdrawals", post_withdrawal, methods=["POST"]),
    Route("/v1/withdrawals", list_withdrawals, methods=["GET"]),
    Route("/v1/withdrawals/{withdrawal_id}/invoice", post_invoice, methods=["POST"]),
    Route("/v1/withdrawals/{withdrawal_id}/paid", post_paid, methods=["POST"]),
    Route("/v1/ledger/check", ledger_check, methods=["GET"]),
]
