"""wallet.ledger.Ledger on SQLite and PostgreSQL: top-ups, session charges,
withdrawals, the views, idempotency and overdrafts under concurrency from
several "servers" (Database objects, each with its own connections), the
audit, and ``dispatch ledger check``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import outcomes
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection

# Every domain's tables register on the shared metadata: the schema compares them all.
import notify.tables  # noqa: F401
import photos.tables  # noqa: F401
import schedule.tables  # noqa: F401
import signaling.tables  # noqa: F401
from core.db import Database
from core.errors import (
    Conflict,
    Forbidden,
    InsufficientFunds,
    InvalidField,
    NotFound,
    Unavailable,
)
from core.identity import Role
from core.tables import metadata
from dispatch import cli
from wallet import billing
from wallet.ledger import (
    EXTERNAL_PAYMENTS,
    EXTERNAL_PAYOUTS,
    MAX_AMOUNT_MINOR,
    PLATFORM_REVENUE,
    Entry,
    Ledger,
    Transaction,
    TxnKind,
    Withdrawal,
    WithdrawalState,
)
from wallet.tables import ledger_accounts, ledger_entries, ledger_transactions

T0 = 1_760_000_000.25  # 2025-10-09T08:53:20.250Z, a Thursday
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
X = TypeVar("X")


def make_ledger(db: Database, *, share: int = 60, tz: str = "Europe/London") -> Ledger:
    return Ledger(db, currency="GBP", therapist_share_pct=share, timezone=tz)


@pytest.fixture
def ledger(db: Database) -> Ledger:
    return make_ledger(db)


def at(iso: str) -> float:
    """Epoch seconds of an ISO 8601 instant with its offset."""
    return dt.datetime.fromisoformat(iso).timestamp()


async def earned(ledger: Ledger, therapist: str, amount: int, client: str = "c-pay") -> None:
    """Give ``therapist`` exactly ``amount`` available (with a 100% share)."""
    full = Ledger(ledger.db, currency="GBP", therapist_share_pct=100, timezone=ledger.timezone)
    await full.topup(client, amount, f"seed-{therapist}-{amount}", T0)
    charged = await full.charge_session(f"ses-{therapist}-{amount}", client, therapist, amount, T0)
    assert charged is not None


# -- the schema ------------------------------------------------------------------------


async def test_the_ledger_tables_match_the_migration(db: Database) -> None:
    def diff(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    def checks(conn: Connection) -> set[str | None]:
        found = set()
        for table in ("ledger_accounts", "ledger_transactions", "withdrawals"):
            found |= {c["name"] for c in inspect(conn).get_check_constraints(table)}
        return found

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
        # Alembic compares no CHECKs: their names come from the naming convention.
        assert await conn.run_sync(checks) == {
            "ck_ledger_accounts_kind",
            "ck_ledger_accounts_balance_nonnegative",
            "ck_ledger_transactions_kind",
            "ck_withdrawals_amount_positive",
            "ck_withdrawals_state",
        }


async def test_a_user_balance_cannot_go_negative_even_written_directly(
    ledger: Ledger, db: Database
) -> None:
    await ledger.topup("c1", 100, "r1", T0)
    with pytest.raises(sa_exc.IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(
                text("UPDATE ledger_accounts SET balance_minor = -1 WHERE id = 'client:c1'")
            )
    # The outside world's accounts may be owed.
    async with db.engine.connect() as conn:
        ext = (
            await conn.execute(
                select(ledger_accounts.c.balance_minor).where(
                    ledger_accounts.c.id == EXTERNAL_PAYMENTS
                )
            )
        ).scalar_one()
    assert ext == -100


def test_settings_are_checked(tmp_path: Any) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ValueError, match="currency"):
        Ledger(db, currency="gbp", therapist_share_pct=60, timezone="Europe/London")
    with pytest.raises(ValueError, match="therapist_share_pct"):
        Ledger(db, currency="GBP", therapist_share_pct=101, timezone="Europe/London")
    with pytest.raises(ValueError, match="time zone"):
        Ledger(db, currency="GBP", therapist_share_pct=60, timezone="Mars/Olympus")


# -- top-ups ---------------------------------------------------------------------------


async def test_topup_credits_the_wallet_from_outside(ledger: Ledger) -> None:
    assert await ledger.balance("c1") == 0
    txn = await ledger.topup("c1", 2500, "pay_1", T0)
    assert txn.kind is TxnKind.TOPUP and txn.reference == "pay_1" and not txn.replayed
    assert txn.created_at == T0 and txn.session_id is None
    assert txn.entries == (Entry(EXTERNAL_PAYMENTS, -2500, -2500), Entry("client:c1", 2500, 2500))
    await ledger.topup("c1", 500, "pay_2", T0 + 1)
    assert await ledger.balance("c1") == 3000
    assert await ledger.balance("c2") == 0
    assert (await ledger.check())["balanced"] is True


async def test_topup_replay_credits_once_and_answers_the_first_result(ledger: Ledger) -> None:
    first = await ledger.topup("c1", 2500, "pay_1", T0)
    again = await ledger.topup("c1", 2500, "pay_1", T0 + 60)
    assert again.replayed and not first.replayed
    assert again == first  # same id, time, entries (balance after the first credit)
    assert await ledger.balance("c1") == 2500
    # The same reference for another amount or client is not a replay.
    with pytest.raises(Conflict) as info:
        await ledger.topup("c1", 2600, "pay_1", T0)
    assert info.value.status == 409 and info.value.fields == {"field": "reference"}
    with pytest.raises(Conflict):
        await ledger.topup("c2", 2500, "pay_1", T0)
    assert await ledger.balance("c1") == 2500 and await ledger.balance("c2") == 0


async def test_ten_concurrent_replays_on_two_servers_credit_once(
    ledger: Ledger, other_db: Database
) -> None:
    other = make_ledger(other_db)
    calls = [(ledger if i % 2 else other).topup("c1", 700, "pay_race", T0) for i in range(10)]
    results = await outcomes(calls)
    assert all(isinstance(r, Transaction) for r in results), results
    txns = [r for r in results if isinstance(r, Transaction)]
    assert len({t.id for t in txns}) == 1
    assert sum(not t.replayed for t in txns) == 1
    assert await ledger.balance("c1") == 700
    assert await other.balance("c1") == 700
    assert len(await ledger.transactions("c1", Role.CLIENT)) == 1
    assert (await ledger.check())["balanced"] is True


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, "10", None, MAX_AMOUNT_MINOR + 1])
async def test_topup_refuses_a_bad_amount(ledger: Ledger, amount: Any) -> None:
    with pytest.raises(InvalidField) as info:
        await ledger.topup("c1", amount, "pay_1", T0)
    assert info.value.status == 422 and info.value.fields == {"field": "amount_minor"}
    assert await ledger.balance("c1") == 0


@pytest.mark.parametrize("reference", ["", "x" * 129, "tab\there", 7, None])
async def test_topup_refuses_a_bad_reference(ledger: Ledger, reference: Any) -> None:
    with pytest.raises(InvalidField) as info:
        await ledger.topup("c1", 100, reference, T0)
    assert info.value.fields == {"field": "reference"}


async def test_topup_refuses_a_bad_client_id(ledger: Ledger) -> None:
    with pytest.raises(InvalidField) as info:
        await ledger.topup("no spaces", 100, "r", T0)
    assert info.value.fields == {"field": "client_id"}
    long_ok = "c" * 64
    await ledger.topup(long_ok, 100, "r", T0)
    assert await ledger.balance(long_ok) == 100


async def test_refund_pays_back_out_and_never_overdraws(ledger: Ledger) -> None:
    await ledger.topup("c1", 1000, "pay_1", T0)
    with pytest.raises(InsufficientFunds) as info:
        await ledger.refund("c1", 1001, "ref_1", T0)
    assert info.value.status == 402 and info.value.code == "insufficient_funds"
    txn = await ledger.refund("c1", 400, "ref_1", T0 + 1)
    assert txn.entries == (Entry("client:c1", -400, 600), Entry(EXTERNAL_PAYMENTS, 400, -600))
    assert (await ledger.refund("c1", 400, "ref_1", T0 + 2)).replayed
    assert await ledger.balance("c1") == 600
    [latest, _] = await ledger.transactions("c1", Role.CLIENT)
    assert latest["kind"] == "refund" and latest["amount_minor"] == -400


# -- session charges -------------------------------------------------------------------


async def test_charge_session_splits_exactly_and_is_written_once(ledger: Ledger) -> None:
    await ledger.topup("c1", 1000, "pay_1", T0)
    txn = await ledger.charge_session("ses_1", "c1", "t1", 151, T0 + 600)
    assert txn is not None and txn.kind is TxnKind.SESSION_CHARGE
    assert txn.session_id == "ses_1" and txn.shortfall_minor == 0
    to_therapist, to_platform = billing.split(151, 60)
    assert (to_therapist, to_platform) == (90, 61)
    assert txn.entries == (
        Entry("client:c1", -151, 849),
        Entry("therapist:t1", 90, 90),
        Entry(PLATFORM_REVENUE, 61, 61),
    )
    assert await ledger.charge_session("ses_1", "c1", "t1", 151, T0 + 601) is None
    assert await ledger.charge_session("ses_1", "c1", "t1", 999, T0 + 601) is None
    assert await ledger.balance("c1") == 849
    assert (await ledger.earnings("t1"))["available_minor"] == 90


async def test_charges_and_shares_sum_exactly_over_many_sessions(ledger: Ledger) -> None:
    charges = [1, 2, 3, 99, 100, 101, 149, 150, 151, 1499, 4500, 7]
    await ledger.topup("c1", sum(charges), "pay_all", T0)
    for i, charge in enumerate(charges):
        txn = await ledger.charge_session(f"ses_{i}", "c1", f"t{i % 3}", charge, T0 + i)
        assert txn is not None
        assert sum(e.amount_minor for e in txn.entries) == 0
        assert -txn.entries[0].amount_minor == charge
    therapists = 0
    for i in range(3):
        therapists += (await ledger.earnings(f"t{i}"))["available_minor"]
    expected_therapists = sum(billing.split(c, 60)[0] for c in charges)
    assert therapists == expected_therapists
    async with ledger.db.engine.connect() as conn:
        platform = (
            await conn.execute(
                select(ledger_accounts.c.balance_minor).where(
                    ledger_accounts.c.id == PLATFORM_REVENUE
                )
            )
        ).scalar_one()
    assert platform + therapists == sum(charges)
    assert await ledger.balance("c1") == 0
    assert (await ledger.check())["balanced"] is True


async def test_a_short_balance_is_charged_what_is_there_and_noted(ledger: Ledger) -> None:
    await ledger.topup("c1", 100, "pay_1", T0)
    txn = await ledger.charge_session("ses_1", "c1", "t1", 150, T0)
    assert txn is not None and txn.shortfall_minor == 50
    assert [e.amount_minor for e in txn.entries] == [-100, 60, 40]
    assert await ledger.balance("c1") == 0
    async with ledger.db.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(ledger_transactions.c.shortfall_minor).where(
                    ledger_transactions.c.id == txn.id
                )
            )
        ).scalar_one()
    assert stored == 50


async def test_a_zero_charge_still_marks_the_session_billed(ledger: Ledger) -> None:
    txn = await ledger.charge_session("ses_0", "c1", "t1", 0, T0)
    assert txn is not None and txn.entries == ()
    assert await ledger.charge_session("ses_0", "c1", "t1", 0, T0) is None
    assert await ledger.transactions("c1", Role.CLIENT) == []
    # Nothing moved, so no account was made or locked (the platform's row
    # is the one every charge would queue on).
    async with ledger.db.reading() as conn:
        assert (await conn.execute(select(ledger_accounts.c.id))).all() == []
    report = await ledger.check()
    assert report["balanced"] is True and report["transactions"] == 1


async def test_concurrent_charges_of_one_session_on_two_servers_write_one(
    ledger: Ledger, other_db: Database
) -> None:
    other = make_ledger(other_db)
    await ledger.topup("c1", 1000, "pay_1", T0)
    calls = [
        (ledger if i % 2 else other).charge_session("ses_1", "c1", "t1", 300, T0) for i in range(8)
    ]
    results = await outcomes(calls)
    written = [r for r in results if isinstance(r, Transaction)]
    assert len(written) == 1 and results.count(None) == 7, results
    assert await ledger.balance("c1") == 700


@pytest.mark.parametrize("charge", [-1, True, 1.0])
async def test_charge_session_refuses_a_bad_charge(ledger: Ledger, charge: Any) -> None:
    with pytest.raises(InvalidField):
        await ledger.charge_session("ses_1", "c1", "t1", charge, T0)


# -- views -----------------------------------------------------------------------------


async def test_transactions_newest_first_from_each_side(ledger: Ledger) -> None:
    top = await ledger.topup("c1", 1000, "pay_1", T0)
    charge = await ledger.charge_session("ses_1", "c1", "t1", 300, T0 + 100)
    assert charge is not None
    withdrawal = await ledger.request_withdrawal("t1", 50, T0 + 200)

    client_view = await ledger.transactions("c1", Role.CLIENT)
    assert client_view == [
        {
            "id": charge.id,
            "kind": "session_charge",
            "amount_minor": -300,
            "balance_after_minor": 700,
            "session_id": "ses_1",
            "booking_id": None,
            "created_at": "2025-10-09T08:55:00.250Z",
            "method": None,
        },
        {
            "id": top.id,
            "kind": "topup",
            "amount_minor": 1000,
            "balance_after_minor": 1000,
            "session_id": None,
            "booking_id": None,
            "created_at": "2025-10-09T08:53:20.250Z",
            # The receipt (PROTOCOL.md §9): a top-up with no checkout is the operator's.
            "method": "operator",
        },
    ]
    therapist_view = await ledger.transactions("t1", "therapist")
    assert [(e["kind"], e["amount_minor"], e["balance_after_minor"]) for e in therapist_view] == [
        ("withdrawal", -50, 130),
        ("earning", 180, 180),
    ]
    assert therapist_view[1]["session_id"] == "ses_1" and therapist_view[1]["id"] == charge.id
    assert all(RFC3339.fullmatch(e["created_at"]) for e in therapist_view)
    assert await ledger.transactions("c1", Role.CLIENT, limit=1) == client_view[:1]
    assert await ledger.transactions("nobody", Role.CLIENT) == []
    # A client and a therapist with the same id are different accounts.
    assert await ledger.transactions("c1", Role.THERAPIST) == []
    with pytest.raises(Forbidden):
        await ledger.transactions("op", Role.OPERATOR)
    assert withdrawal.amount_minor == 50


async def test_earnings_follow_a_withdrawal_to_its_payout(ledger: Ledger) -> None:
    assert await ledger.earnings("t1") == {
        "available_minor": 0,
        "withdrawing_minor": 0,
        "paid_out_minor": 0,
    }
    await earned(ledger, "t1", 1000)
    w = await ledger.request_withdrawal("t1", 600, T0)
    assert await ledger.earnings("t1") == {
        "available_minor": 400,
        "withdrawing_minor": 600,
        "paid_out_minor": 0,
    }
    await ledger.invoice_received(w.id, T0 + 1)
    await ledger.mark_paid(w.id, T0 + 2)
    assert await ledger.earnings("t1") == {
        "available_minor": 400,
        "withdrawing_minor": 0,
        "paid_out_minor": 600,
    }
    async with ledger.db.engine.connect() as conn:
        payouts = (
            await conn.execute(
                select(ledger_accounts.c.balance_minor).where(
                    ledger_accounts.c.id == EXTERNAL_PAYOUTS
                )
            )
        ).scalar_one()
    assert payouts == 600
    assert (await ledger.check())["balanced"] is True


# -- withdrawals -----------------------------------------------------------------------


async def test_withdrawal_state_machine(ledger: Ledger) -> None:
    await earned(ledger, "t1", 1000)
    w = await ledger.request_withdrawal("t1", 1000, T0)
    assert w.state is WithdrawalState.AWAITING_INVOICE and w.payout_date is None
    assert w.public() == {
        "id": w.id,
        "therapist_id": "t1",
        "amount_minor": 1000,
        "state": "awaiting_invoice",
        "created_at": "2025-10-09T08:53:20.250Z",
        "payout_date": None,
        "invoiced_at": None,
        "paid_at": None,
    }
    assert await ledger.withdrawal(w.id) == w
    with pytest.raises(Conflict) as info:
        await ledger.mark_paid(w.id, T0)
    assert info.value.status == 409 and info.value.fields == {"state": "awaiting_invoice"}

    # Thursday 2025-10-09: paid on the Friday of the week after, 2025-10-17.
    scheduled = await ledger.invoice_received(w.id, T0 + 10)
    assert scheduled.state is WithdrawalState.SCHEDULED
    assert scheduled.payout_date == dt.date(2025, 10, 17)
    assert scheduled.public()["payout_date"] == "2025-10-17"
    assert await ledger.withdrawal(w.id) == scheduled
    with pytest.raises(Conflict):
        await ledger.invoice_received(w.id, T0 + 11)

    paid = await ledger.mark_paid(w.id, T0 + 20)
    assert paid.state is WithdrawalState.PAID and paid.paid_at == T0 + 20
    assert paid.payout_date == dt.date(2025, 10, 17)
    assert await ledger.withdrawal(w.id) == paid
    with pytest.raises(Conflict) as info:
        await ledger.mark_paid(w.id, T0 + 21)
    assert info.value.fields == {"state": "paid"}
    with pytest.raises(Conflict):
        await ledger.invoice_received(w.id, T0 + 21)

    with pytest.raises(NotFound):
        await ledger.invoice_received("wd_missing", T0)
    with pytest.raises(NotFound):
        await ledger.mark_paid("wd_missing", T0)
    with pytest.raises(NotFound):
        await ledger.withdrawal("wd_missing")
    assert [x.id for x in await ledger.withdrawals(therapist_id="t1")] == [w.id]
    assert await ledger.withdrawals(state="awaiting_invoice") == []
    assert (await ledger.check())["balanced"] is True


async def test_a_withdrawal_needs_a_positive_amount_within_what_is_available(
    ledger: Ledger,
) -> None:
    await earned(ledger, "t1", 500)
    bad: Any
    for bad in (0, -5, True, 2.5):
        with pytest.raises(InvalidField):
            await ledger.request_withdrawal("t1", bad, T0)
    with pytest.raises(InsufficientFunds) as info:
        await ledger.request_withdrawal("t1", 501, T0)
    assert info.value.status == 402
    with pytest.raises(InsufficientFunds):
        await ledger.request_withdrawal("t-no-money", 1, T0)
    await ledger.request_withdrawal("t1", 500, T0)
    with pytest.raises(InsufficientFunds):
        await ledger.request_withdrawal("t1", 1, T0)
    assert await ledger.withdrawals() != []
    assert (await ledger.earnings("t1"))["withdrawing_minor"] == 500


async def test_fifty_concurrent_withdrawals_of_the_same_money_on_two_servers(
    ledger: Ledger, other_db: Database
) -> None:
    other = make_ledger(other_db)
    await earned(ledger, "t1", 6000)
    calls = [(ledger if i % 2 else other).request_withdrawal("t1", 6000, T0) for i in range(50)]
    results = await outcomes(calls)
    won = [r for r in results if isinstance(r, Withdrawal)]
    lost = [r for r in results if isinstance(r, InsufficientFunds)]
    assert len(won) == 1 and len(lost) == 49, [type(r).__name__ for r in results]
    assert await ledger.earnings("t1") == {
        "available_minor": 0,
        "withdrawing_minor": 6000,
        "paid_out_minor": 0,
    }
    assert (await other.check())["balanced"] is True


async def test_concurrent_partial_withdrawals_never_overdraw(
    ledger: Ledger, other_db: Database
) -> None:
    other = make_ledger(other_db)
    await earned(ledger, "t1", 6000)
    calls = [(ledger if i % 2 else other).request_withdrawal("t1", 1000, T0) for i in range(20)]
    results = await outcomes(calls)
    assert sum(isinstance(r, Withdrawal) for r in results) == 6
    assert sum(isinstance(r, InsufficientFunds) for r in results) == 14
    assert (await ledger.earnings("t1"))["available_minor"] == 0
    history = await ledger.transactions("t1", Role.THERAPIST)
    assert [e["balance_after_minor"] for e in history] == [0, 1000, 2000, 3000, 4000, 5000, 6000]


async def test_paying_one_withdrawal_twice_at_once_pays_it_once(
    ledger: Ledger, other_db: Database
) -> None:
    other = make_ledger(other_db)
    await earned(ledger, "t1", 800)
    w = await ledger.request_withdrawal("t1", 800, T0)
    await ledger.invoice_received(w.id, T0)
    results = await outcomes([(ledger if i % 2 else other).mark_paid(w.id, T0) for i in range(6)])
    assert sum(isinstance(r, Withdrawal) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 5
    assert (await ledger.earnings("t1"))["paid_out_minor"] == 800
    assert (await ledger.check())["balanced"] is True


@pytest.mark.parametrize(
    ("invoice_at", "tz", "payout"),
    [
        # Spring forward in London (Sunday 2025-03-30, 01:00 UTC). 22:59 UTC
        # is still Sunday (23:59 BST): the week of Monday 24 March.
        ("2025-03-30T22:59:00+00:00", "Europe/London", "2025-04-04"),
        # 23:30 UTC is Monday 00:30 BST: a new week, although UTC says Sunday.
        ("2025-03-30T23:30:00+00:00", "Europe/London", "2025-04-11"),
        # Fall back (Sunday 2025-10-26, 01:00 UTC): before and after the change,
        # and late Sunday evening in GMT, are all the week of Monday 20 October.
        ("2025-10-26T00:30:00+00:00", "Europe/London", "2025-10-31"),
        ("2025-10-26T01:30:00+00:00", "Europe/London", "2025-10-31"),
        ("2025-10-26T23:59:59+00:00", "Europe/London", "2025-10-31"),
        ("2025-10-27T00:00:00+00:00", "Europe/London", "2025-11-07"),
        # The week before the change, 23:30 UTC on Sunday is Monday in BST.
        ("2025-10-19T22:30:00+00:00", "Europe/London", "2025-10-24"),
        ("2025-10-19T23:30:00+00:00", "Europe/London", "2025-10-31"),
        # A Friday invoice waits for the next week's Friday; a Monday one 11 days.
        ("2025-10-24T12:00:00+01:00", "Europe/London", "2025-10-31"),
        ("2025-10-20T09:00:00+01:00", "Europe/London", "2025-10-31"),
        # The deployment's zone, not UTC: Monday 02:00 UTC is Sunday in New York.
        ("2025-03-31T02:00:00+00:00", "America/New_York", "2025-04-04"),
        ("2025-03-31T02:00:00+00:00", "Europe/London", "2025-04-11"),
    ],
)
async def test_payout_dates_in_the_deployments_time_zone(
    db: Database, invoice_at: str, tz: str, payout: str
) -> None:
    ledger = make_ledger(db, tz=tz)
    await earned(ledger, "t1", 100)
    w = await ledger.request_withdrawal("t1", 100, at(invoice_at) - 3600)
    scheduled = await ledger.invoice_received(w.id, at(invoice_at))
    assert scheduled.public()["payout_date"] == payout
    assert (await ledger.withdrawal(w.id)).payout_date == dt.date.fromisoformat(payout)


# -- the audit -------------------------------------------------------------------------


async def _busy_ledger(ledger: Ledger) -> Transaction:
    await ledger.topup("c1", 1000, "pay_1", T0)
    charge = await ledger.charge_session("ses_1", "c1", "t1", 450, T0 + 60)
    assert charge is not None
    w = await ledger.request_withdrawal("t1", 100, T0 + 120)
    await ledger.invoice_received(w.id, T0 + 180)
    await ledger.mark_paid(w.id, T0 + 240)
    return charge


async def test_check_on_a_sound_ledger(ledger: Ledger) -> None:
    assert await ledger.check() == {
        "balanced": True,
        "currency": "GBP",
        "transactions": 0,
        "unbalanced_transactions": [],
        "negative_accounts": [],
        "accounts_out_of_step": [],
        "other_currency_accounts": [],
        "overheld_accounts": [],
    }
    await _busy_ledger(ledger)
    report = await ledger.check()
    assert report["balanced"] is True and report["transactions"] == 4
    # Everything sums to zero across all accounts, too.
    async with ledger.db.engine.connect() as conn:
        total = (
            await conn.execute(text("SELECT sum(balance_minor) FROM ledger_accounts"))
        ).scalar()
    assert total == 0


async def test_check_finds_a_tampered_entry(ledger: Ledger, db: Database) -> None:
    charge = await _busy_ledger(ledger)
    async with db.engine.begin() as conn:
        await conn.execute(
            ledger_entries.update()
            .where(
                ledger_entries.c.transaction_id == charge.id,
                ledger_entries.c.account_id == "therapist:t1",
            )
            .values(amount_minor=ledger_entries.c.amount_minor + 5)
        )
    report = await ledger.check()
    assert report["balanced"] is False
    assert report["unbalanced_transactions"] == [charge.id]
    assert report["accounts_out_of_step"] == ["therapist:t1"]
    assert report["negative_accounts"] == []


async def test_check_finds_an_extra_entry_without_a_counterpart(
    ledger: Ledger, db: Database
) -> None:
    top = await ledger.topup("c1", 1000, "pay_1", T0)
    async with db.engine.begin() as conn:
        await conn.execute(
            ledger_entries.insert().values(
                transaction_id=top.id,
                account_id="client:c1",
                amount_minor=1000,
                balance_after_minor=2000,
                created_at=dt.datetime.fromtimestamp(T0, dt.UTC),
            )
        )
    report = await ledger.check()
    assert not report["balanced"]
    assert report["unbalanced_transactions"] == [top.id]
    assert report["accounts_out_of_step"] == ["client:c1"]


async def _allow_negative_balances(db: Database) -> None:
    """Take the CHECK away, as a broken writer elsewhere might have."""
    if db.dialect == "postgresql":
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "ALTER TABLE ledger_accounts "
                    "DROP CONSTRAINT ck_ledger_accounts_balance_nonnegative"
                )
            )


async def test_check_finds_a_negative_balance(ledger: Ledger, db: Database) -> None:
    await _busy_ledger(ledger)
    await _allow_negative_balances(db)
    async with db.engine.begin() as conn:
        if db.dialect == "sqlite":
            await conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
        await conn.execute(
            ledger_accounts.update()
            .where(ledger_accounts.c.id == "client:c1")
            .values(balance_minor=-7)
        )
        if db.dialect == "sqlite":
            await conn.exec_driver_sql("PRAGMA ignore_check_constraints = OFF")
    report = await ledger.check()
    assert report["balanced"] is False
    assert report["negative_accounts"] == ["client:c1"]
    assert report["accounts_out_of_step"] == ["client:c1"]
    assert report["unbalanced_transactions"] == []


async def test_check_finds_an_account_of_another_currency(ledger: Ledger, db: Database) -> None:
    await ledger.topup("c1", 1000, "pay_1", T0)
    euros = Ledger(db, currency="EUR", therapist_share_pct=60, timezone="Europe/London")
    report = await euros.check()
    assert report["balanced"] is False
    assert report["other_currency_accounts"] == ["client:c1", EXTERNAL_PAYMENTS]


# -- a database that does not answer ----------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_database_is_unavailable() -> None:
    db = Database.from_url(
        f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/x", connect_timeout_s=2
    )
    ledger = make_ledger(db)
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: ledger.balance("c1"),
            lambda: ledger.topup("c1", 1, "r", T0),
            lambda: ledger.check(),
        ]
        for call in calls:
            with pytest.raises(Unavailable):
                await call()
    finally:
        await db.aclose()


# -- dispatch ledger check --------------------------------------------------------------


def test_cli_ledger_check(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> None:
        db = Database.from_url(database_url)
        await db.migrate()
        try:
            await _busy_ledger(make_ledger(db))
        finally:
            await db.aclose()

    async def tamper() -> None:
        db = Database.from_url(database_url)
        try:
            async with db.engine.begin() as conn:
                await conn.execute(
                    ledger_entries.update()
                    .where(ledger_entries.c.account_id == PLATFORM_REVENUE)
                    .values(amount_minor=1)
                )
        finally:
            await db.aclose()

    monkeypatch.delenv("DISPATCH_DATABASE_URL", raising=False)
    monkeypatch.delenv("DISPATCH_CURRENCY", raising=False)
    asyncio.run(seed())
    assert cli.main(["ledger", "check", "--database-url", database_url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["balanced"] is True and report["transactions"] == 4

    asyncio.run(tamper())
    monkeypatch.setenv("DISPATCH_DATABASE_URL", database_url)
    assert cli.main(["ledger", "check"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["balanced"] is False
    assert report["accounts_out_of_step"] == [PLATFORM_REVENUE]
    assert len(report["unbalanced_transactions"]) == 1


def test_cli_ledger_check_failures(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISPATCH_CURRENCY", raising=False)
    url = f"postgresql://u@127.0.0.1:{_closed_port()}/x"
    assert cli.main(["ledger", "check", "--database-url", url]) == 1
    assert "unavailable" in capsys.readouterr().err
    assert cli.main(["ledger", "check", "--database-url", "mysql://u@h/d"]) == 2
    assert "unsupported database" in capsys.readouterr().err
