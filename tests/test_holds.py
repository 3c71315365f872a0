"""wallet.holds on SQLite and PostgreSQL: money kept for bookings (PROTOCOL.md
§8). A hold is not a movement: the balance keeps the money, ``held`` says how
much of it is spoken for, and nothing that spends a client's money (another
hold, a session's charge, a refund) can take it. Charging a hold is a
``booking_charge`` or ``cancellation_fee``; releasing it gives it back; each
happens once, also when servers race."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import pytest
from conftest import outcomes
from sqlalchemy import func, select, text

from core.db import Database
from core.errors import Conflict, InsufficientFunds, InvalidField, NotFound
from core.identity import Role
from wallet import billing
from wallet.ledger import PLATFORM_REVENUE, Hold, HoldState, Ledger, TxnKind
from wallet.tables import wallet_holds

T0 = 1_760_000_000.25
X = TypeVar("X")


def make_ledger(db: Database) -> Ledger:
    return Ledger(db, currency="GBP", therapist_share_pct=60, timezone="Europe/London")


@pytest.fixture
def ledger(db: Database) -> Ledger:
    return make_ledger(db)


async def hold(ledger: Ledger, hold_id: str, client: str, amount: int, now: float = T0) -> Hold:
    async with ledger.db.writing() as conn:
        return await ledger.hold_in(conn, hold_id, client, amount, now)


async def settle(ledger: Ledger, hold_id: str, charge: int, therapist: int, **kw: Any) -> Any:
    kind = kw.pop("kind", TxnKind.BOOKING_CHARGE)
    async with ledger.db.writing() as conn:
        return await ledger.settle_hold_in(
            conn,
            hold_id,
            charge_minor=charge,
            therapist_id=kw.pop("therapist_id", "t1"),
            therapist_minor=therapist,
            kind=kind,
            now=kw.pop("now", T0 + 60),
        )


async def release(ledger: Ledger, hold_id: str, now: float = T0 + 60) -> Hold:
    async with ledger.db.writing() as conn:
        return await ledger.release_hold_in(conn, hold_id, now)


async def sound(ledger: Ledger) -> None:
    report = await ledger.check()
    assert report["balanced"] is True, report
    assert report["overheld_accounts"] == []


# -- holding ---------------------------------------------------------------------------


async def test_a_hold_keeps_money_without_moving_it(ledger: Ledger) -> None:
    await ledger.topup("c1", 10_000, "pay_1", T0)
    placed = await hold(ledger, "bkg_1", "c1", 6000)
    assert placed == Hold("bkg_1", "c1", 6000, HoldState.HELD, 0, placed.created_at, None)
    assert placed.replayed is False
    # The balance still has it; what may be spent does not.
    assert await ledger.balance("c1") == 10_000
    assert await ledger.held("c1") == 6000
    assert await ledger.available("c1") == 4000
    assert await ledger.hold("bkg_1") == placed
    # No ledger movement was written.
    assert [e["kind"] for e in await ledger.transactions("c1", Role.CLIENT)] == ["topup"]
    assert await ledger.held("nobody") == 0 and await ledger.available("nobody") == 0
    await sound(ledger)


async def test_a_hold_beyond_what_is_spendable_is_refused_and_writes_nothing(
    ledger: Ledger,
) -> None:
    await ledger.topup("c1", 10_000, "pay_1", T0)
    await hold(ledger, "bkg_1", "c1", 6000)
    with pytest.raises(InsufficientFunds) as caught:
        await hold(ledger, "bkg_2", "c1", 4001)
    assert caught.value.fields == {
        "balance_minor": 10_000,
        "held_minor": 6000,
        "required_minor": 4001,
    }
    assert await ledger.hold("bkg_2") is None
    # A series is all or none, and the error names the total.
    async with ledger.db.writing() as conn:
        with pytest.raises(InsufficientFunds) as caught:
            await ledger.hold_many_in(conn, "c1", [("bkg_3", 2000), ("bkg_4", 2001)], T0)
    assert caught.value.fields["required_minor"] == 4001
    assert await ledger.hold("bkg_3") is None and await ledger.held("c1") == 6000
    # Exactly what is left can be held.
    async with ledger.db.writing() as conn:
        made = await ledger.hold_many_in(conn, "c1", [("bkg_3", 2000), ("bkg_4", 2000)], T0)
    assert [h.id for h in made] == ["bkg_3", "bkg_4"]
    assert await ledger.available("c1") == 0
    # A client with no wallet at all has nothing to hold.
    with pytest.raises(InsufficientFunds):
        await hold(ledger, "bkg_9", "c-new", 1)
    await sound(ledger)


async def test_holding_is_idempotent_per_hold_id(ledger: Ledger) -> None:
    await ledger.topup("c1", 10_000, "pay_1", T0)
    first = await hold(ledger, "bkg_1", "c1", 6000)
    again = await hold(ledger, "bkg_1", "c1", 6000, now=T0 + 5)
    assert again.replayed is True and again == first
    assert await ledger.held("c1") == 6000  # counted once
    # A replay needs no spendable money: 4000 is left, the hold is 6000.
    with pytest.raises(Conflict):
        await hold(ledger, "bkg_1", "c1", 5000)
    with pytest.raises(Conflict):
        await hold(ledger, "bkg_1", "c2", 6000)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidField):
            await hold(ledger, "bkg_x", "c1", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidField):
        await hold(ledger, "bad id!", "c1", 1)
    async with ledger.db.writing() as conn:
        with pytest.raises(InvalidField):
            await ledger.hold_many_in(conn, "c1", [("bkg_y", 1), ("bkg_y", 1)], T0)


async def test_concurrent_holds_from_two_servers_never_overcommit(
    db: Database, other_db: Database
) -> None:
    ledgers = [make_ledger(db), make_ledger(other_db)]
    await ledgers[0].topup("c1", 1000, "pay_1", T0)
    results = await outcomes([hold(ledgers[i % 2], f"bkg_{i}", "c1", 300) for i in range(20)])
    won = [r for r in results if isinstance(r, Hold)]
    assert len(won) == 3, results
    assert all(isinstance(r, InsufficientFunds) for r in results if not isinstance(r, Hold))
    assert await ledgers[1].held("c1") == 900
    assert await ledgers[1].available("c1") == 100
    await sound(ledgers[0])


# -- charging and releasing ---------------------------------------------------------------


async def test_charging_a_hold_pays_the_therapist_and_releases_the_rest(ledger: Ledger) -> None:
    await ledger.topup("c1", 10_000, "pay_1", T0)
    await hold(ledger, "bkg_1", "c1", 6000)
    txn = await settle(ledger, "bkg_1", 6000, 3600)
    assert txn.kind is TxnKind.BOOKING_CHARGE and txn.reference == "bkg_1"
    assert {(e.account_id, e.amount_minor) for e in txn.entries} == {
        ("client:c1", -6000),
        ("therapist:t1", 3600),
        (PLATFORM_REVENUE, 2400),
    }
    assert await ledger.balance("c1") == 4000
    assert await ledger.held("c1") == 0 and await ledger.available("c1") == 4000
    charged = await ledger.hold("bkg_1")
    assert charged is not None and charged.state is HoldState.CHARGED
    assert charged.charged_minor == 6000 and charged.settled_at == T0 + 60
    # The views: the client sees the booking's charge, the therapist an earning.
    [latest, _] = await ledger.transactions("c1", Role.CLIENT)
    assert (latest["kind"], latest["amount_minor"], latest["booking_id"]) == (
        "booking_charge",
        -6000,
        "bkg_1",
    )
    assert latest["session_id"] is None
    [earning] = await ledger.transactions("t1", Role.THERAPIST)
    assert (earning["kind"], earning["amount_minor"], earning["booking_id"]) == (
        "earning",
        3600,
        "bkg_1",
    )
    assert (await ledger.earnings("t1"))["available_minor"] == 3600
    # Once: a replay writes nothing; another ending is a conflict.
    again = await settle(ledger, "bkg_1", 6000, 3600)
    assert again.replayed is True and again.id == txn.id
    with pytest.raises(Conflict):
        await settle(ledger, "bkg_1", 3000, 900, kind=TxnKind.CANCELLATION_FEE)
    with pytest.raises(Conflict):
        await release(ledger, "bkg_1")
    assert await ledger.balance("c1") == 4000
    await sound(ledger)


async def test_a_fee_charges_part_of_the_hold(ledger: Ledger) -> None:
    await ledger.topup("c1", 6000, "pay_1", T0)
    await hold(ledger, "bkg_1", "c1", 6000)
    txn = await settle(ledger, "bkg_1", 3000, 900, kind="cancellation_fee")
    assert txn.kind is TxnKind.CANCELLATION_FEE
    assert await ledger.balance("c1") == 3000 and await ledger.available("c1") == 3000
    [fee, _] = await ledger.transactions("c1", Role.CLIENT)
    assert (fee["kind"], fee["amount_minor"], fee["booking_id"]) == (
        "cancellation_fee",
        -3000,
        "bkg_1",
    )
    [earning] = await ledger.transactions("t1", Role.THERAPIST)
    assert (earning["kind"], earning["amount_minor"]) == ("earning", 900)
    # A fee of nothing charges nothing: the hold is released.
    await hold(ledger, "bkg_2", "c1", 3000)
    assert await settle(ledger, "bkg_2", 0, 0, kind="cancellation_fee") is None
    released = await ledger.hold("bkg_2")
    assert released is not None and released.state is HoldState.RELEASED
    assert await ledger.available("c1") == 3000
    await sound(ledger)


async def test_bad_settlements_are_refused(ledger: Ledger) -> None:
    await ledger.topup("c1", 6000, "pay_1", T0)
    await hold(ledger, "bkg_1", "c1", 5000)
    with pytest.raises(InvalidField):
        await settle(ledger, "bkg_1", 5001, 0)  # more than the hold
    with pytest.raises(InvalidField):
        await settle(ledger, "bkg_1", 100, 101)  # the therapist more than the charge
    with pytest.raises(InvalidField):
        await settle(ledger, "bkg_1", 100, 10, kind=TxnKind.SESSION_CHARGE)
    with pytest.raises(NotFound):
        await settle(ledger, "bkg_none", 100, 10)
    with pytest.raises(NotFound):
        await release(ledger, "bkg_none")
    hold_now = await ledger.hold("bkg_1")
    assert hold_now is not None and hold_now.state is HoldState.HELD
    await sound(ledger)


async def test_releasing_gives_everything_back_once(ledger: Ledger) -> None:
    await ledger.topup("c1", 6000, "pay_1", T0)
    await hold(ledger, "bkg_1", "c1", 6000)
    assert await ledger.available("c1") == 0
    released = await release(ledger, "bkg_1")
    assert released.state is HoldState.RELEASED and released.settled_at == T0 + 60
    assert await ledger.available("c1") == 6000 and await ledger.balance("c1") == 6000
    again = await release(ledger, "bkg_1", now=T0 + 120)
    assert again.replayed is True and again.settled_at == T0 + 60
    with pytest.raises(Conflict):
        await settle(ledger, "bkg_1", 6000, 3600)
    await sound(ledger)


async def test_racing_settlements_of_one_hold_happen_once(db: Database, other_db: Database) -> None:
    ledgers = [make_ledger(db), make_ledger(other_db)]
    await ledgers[0].topup("c1", 6000, "pay_1", T0)
    await hold(ledgers[0], "bkg_1", "c1", 6000)
    results = await outcomes([settle(ledgers[i % 2], "bkg_1", 6000, 3600) for i in range(8)])
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(1 for r in results if not r.replayed) == 1
    assert len({r.id for r in results}) == 1
    assert await ledgers[1].balance("c1") == 0
    assert (await ledgers[1].earnings("t1"))["available_minor"] == 3600
    await sound(ledgers[0])


# -- everything that spends respects holds ----------------------------------------------------


async def test_a_session_charge_takes_only_what_is_not_held(ledger: Ledger) -> None:
    await ledger.topup("c1", 10_000, "pay_1", T0)
    await hold(ledger, "bkg_1", "c1", 6000)
    charge = await ledger.charge_session("ses_1", "c1", "t1", 5000, T0 + 60)
    assert charge is not None
    entry = charge.entry_for("client:c1")
    assert entry is not None and entry.amount_minor == -4000
    assert charge.shortfall_minor == 1000
    # The hold is whole: the booking can still be paid for.
    assert await ledger.balance("c1") == 6000 and await ledger.held("c1") == 6000
    await settle(ledger, "bkg_1", 6000, 3600)
    assert await ledger.balance("c1") == 0
    await sound(ledger)


async def test_a_refund_cannot_take_held_money(ledger: Ledger) -> None:
    await ledger.topup("c1", 10_000, "pay_1", T0)
    await hold(ledger, "bkg_1", "c1", 6000)
    with pytest.raises(InsufficientFunds):
        await ledger.refund("c1", 4001, "ref_1", T0 + 10)
    await ledger.refund("c1", 4000, "ref_2", T0 + 10)
    assert await ledger.balance("c1") == 6000 and await ledger.available("c1") == 0
    # A top-up always lands, whatever is held.
    await ledger.topup("c1", 100, "pay_2", T0 + 20)
    assert await ledger.available("c1") == 100
    await sound(ledger)


# -- the audit ------------------------------------------------------------------------------


async def test_the_audit_finds_holds_beyond_a_balance(ledger: Ledger, db: Database) -> None:
    await ledger.topup("c1", 1000, "pay_1", T0)
    await hold(ledger, "bkg_1", "c1", 1000)
    await sound(ledger)
    at = dt.datetime.fromtimestamp(T0, dt.UTC)
    async with db.engine.begin() as conn:
        for hid, client in (("bkg_2", "c1"), ("bkg_3", "c-nowallet")):
            await conn.execute(
                wallet_holds.insert().values(
                    id=hid,
                    client_id=client,
                    amount_minor=1,
                    state="held",
                    charged_minor=0,
                    created_at=at,
                )
            )
    report = await ledger.check()
    assert report["balanced"] is False
    assert report["overheld_accounts"] == ["client:c-nowallet", "client:c1"]
    assert report["unbalanced_transactions"] == [] and report["negative_accounts"] == []


async def test_the_database_refuses_impossible_holds(db: Database) -> None:
    at = dt.datetime.fromtimestamp(T0, dt.UTC)
    row = {"client_id": "c1", "state": "held", "charged_minor": 0, "created_at": at}
    for bad in (
        {"id": "h1", "amount_minor": 0},
        {"id": "h2", "amount_minor": 5, "state": "spent"},
        {"id": "h3", "amount_minor": 5, "charged_minor": 6},
    ):
        with pytest.raises(Exception, match=r"(?i)check"):
            async with db.engine.begin() as conn:
                await conn.execute(wallet_holds.insert().values(**{**row, **bad}))
    async with db.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(wallet_holds))).scalar()
        kinds = (
            await conn.execute(
                text("SELECT count(*) FROM ledger_transactions WHERE kind = 'booking_charge'")
            )
        ).scalar()
    assert count == 0 and kinds == 0


async def test_a_charge_decided_under_the_lock_sees_only_what_is_not_held(ledger: Ledger) -> None:
    """Metering.settle's form: the charge is a function of what the client
    may spend, called inside the charge's own transaction."""
    await ledger.topup("c1", 10_000, "pay_1", T0)
    await hold(ledger, "bkg_1", "c1", 6000)
    seen: list[int] = []

    def charge(spendable: int) -> int:
        seen.append(spendable)
        return billing.final_charge(T0, T0 + 3600, spendable, 150)

    txn = await ledger.charge_session("ses_1", "c1", "t1", charge, T0 + 3600)
    assert seen == [4000]
    assert txn is not None and txn.shortfall_minor == 0
    entry = txn.entry_for("client:c1")
    # 26 whole minutes at 150 fit in 4000; the hold is untouched.
    assert entry is not None and entry.amount_minor == -3900
    assert await ledger.balance("c1") == 6100 and await ledger.held("c1") == 6000
    # Once per session, and the function is not asked again.
    assert await ledger.charge_session("ses_1", "c1", "t1", charge, T0 + 3601) is None
    assert seen == [4000]
    await sound(ledger)


async def test_a_charge_function_answering_nonsense_writes_nothing(ledger: Ledger) -> None:
    await ledger.topup("c1", 1000, "pay_1", T0)
    with pytest.raises(InvalidField):
        await ledger.charge_session("ses_1", "c1", "t1", lambda spendable: -1, T0 + 60)
    # Rolled back whole: the session can still be charged.
    txn = await ledger.charge_session("ses_1", "c1", "t1", lambda spendable: 300, T0 + 60)
    assert txn is not None and (entry := txn.entry_for("client:c1")) is not None
    assert entry.amount_minor == -300
    await sound(ledger)
