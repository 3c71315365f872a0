"""schedule.store.Bookings on SQLite and PostgreSQL (PROTOCOL.md §8): a
booking and its hold land together or not at all; one winner per slot however
many servers race for it; a series is all or nothing; the free intro once;
idempotent creates; every cancel and outcome moves the right money once; and
the reads the routes, the loops and the quick-connect guard use."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any, TypeVar

import pytest
from conftest import outcomes
from sqlalchemy import func, select, text

from core.db import Database
from core.errors import (
    Conflict,
    InsufficientFunds,
    IntroUsed,
    InvalidField,
    NotFound,
    SlotTaken,
    TooEarly,
)
from core.identity import Role
from schedule.model import (
    INTRO_USED_STATES,
    BookingState,
    BookingType,
    Policy,
    parse_availability,
)
from schedule.store import Booking, Bookings, Created
from schedule.tables import COUNTED_INTRO_STATES, bookings
from wallet.ledger import Ledger
from wallet.tables import wallet_holds

X = TypeVar("X")

#: 2026-06-01T00:00:00Z, a Monday. Bookings are made a few days ahead of it.
T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC).timestamp()
H = 3600.0
DAY = 86400.0
#: Thursday 2026-06-04 09:00 UTC.
SLOT = T0 + 3 * DAY + 9 * H
PRICE = 6000
SHARE = 60
POLICY = Policy(cancel_window_h=24, late_fee_pct=100, late_fee_therapist_pct=50)


def make_ledger(db: Database) -> Ledger:
    return Ledger(db, currency="GBP", therapist_share_pct=SHARE, timezone="Europe/London")


def make_store(db: Database) -> Bookings:
    return Bookings(db, make_ledger(db))


@pytest.fixture
def store(db: Database) -> Bookings:
    return make_store(db)


async def book(
    store: Bookings,
    *,
    client: str = "c1",
    therapist: str = "t1",
    starts: Sequence[float] = (SLOT,),
    type: BookingType = BookingType.SESSION,
    key: str | None = None,
    by: str | None = None,
    role: str = "client",
    length: int = 50,
    buffer: int = 10,
    now: float = T0,
) -> Created:
    return await store.create(
        therapist_id=therapist,
        client_id=client,
        type=type,
        starts=list(starts),
        length_min=length,
        buffer_min=buffer,
        price_minor=PRICE if type is BookingType.SESSION else 0,
        policy=POLICY,
        created_by=by or client,
        created_by_role=role,
        idempotency_key=key,
        now=now,
    )


async def sound(ledger: Ledger) -> None:
    report = await ledger.check()
    assert report["balanced"] is True, report


async def count_rows(db: Database, table: Any) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


# -- availability ----------------------------------------------------------------------------


async def test_availability_is_stored_and_replaced(store: Bookings) -> None:
    assert await store.get_availability("t1") is None
    av = parse_availability(
        {
            "timezone": "Europe/London",
            "weekly": [
                {"day": "thu", "start": "09:00", "end": "12:00"},
                {"day": "mon", "start": "13:30", "end": "17:00"},
            ],
            "overrides": [{"date": "2026-06-11", "slots": []}],
        }
    )
    await store.put_availability("t1", av, T0)
    assert await store.get_availability("t1") == av
    later = parse_availability({"timezone": "America/New_York", "weekly": []})
    await store.put_availability("t1", later, T0 + 60)
    assert await store.get_availability("t1") == later
    await store.put_availability("t0", av, T0)
    assert await store.therapist_ids(10) == ["t0", "t1"]
    assert await store.therapist_ids(1) == ["t0"]


# -- creating ----------------------------------------------------------------------------------


async def test_a_session_is_booked_with_its_price_held(store: Bookings) -> None:
    await store.ledger.topup("c1", 10_000, "pay_1", T0)
    made = await book(store, key="k1")
    assert made.replayed is False
    [b] = made.bookings
    assert b.state is BookingState.SCHEDULED and b.type is BookingType.SESSION
    assert (b.start, b.end, b.block_end) == (SLOT, SLOT + 50 * 60, SLOT + 60 * 60)
    assert b.to_wire() == {
        "id": b.id,
        "therapist_id": "t1",
        "client_id": "c1",
        "type": "session",
        "start": "2026-06-04T09:00:00.000Z",
        "end": "2026-06-04T09:50:00.000Z",
        "state": "scheduled",
        "price_minor": PRICE,
        "fee_minor": 0,
        "series_id": None,
        "created_by": "c1",
        "cancelled_by": None,
        "session_id": None,
        "policy": {"cancel_window_h": 24, "late_fee_pct": 100, "late_fee_therapist_pct": 50},
    }
    assert await store.get(b.id) == b
    assert await store.get("bkg_none") is None
    # A hold, not a charge.
    assert await store.ledger.balance("c1") == 10_000
    assert await store.ledger.held("c1") == PRICE
    assert await store.ledger.available("c1") == 4000
    assert [e["kind"] for e in await store.ledger.transactions("c1", Role.CLIENT)] == ["topup"]
    await sound(store.ledger)


async def test_no_money_no_booking(store: Bookings, db: Database) -> None:
    await store.ledger.topup("c1", PRICE - 1, "pay_1", T0)
    with pytest.raises(InsufficientFunds) as caught:
        await book(store)
    assert caught.value.fields["required_minor"] == PRICE
    assert await count_rows(db, bookings) == 0
    assert await count_rows(db, wallet_holds) == 0
    # Money held for one booking does not pay for the next.
    await store.ledger.topup("c1", 1, "pay_2", T0)
    await book(store)
    with pytest.raises(InsufficientFunds):
        await book(store, starts=[SLOT + DAY])
    assert await count_rows(db, bookings) == 1


async def test_an_intro_is_free_and_once(store: Bookings, db: Database) -> None:
    # The database's index counts the intros the rules count.
    assert set(COUNTED_INTRO_STATES) == {str(s) for s in INTRO_USED_STATES}
    intro = (await book(store, type=BookingType.INTRO, length=15)).bookings[0]
    assert intro.price_minor == 0 and await store.ledger.held("c1") == 0
    assert await store.intro_used("c1", "t1") is True
    assert await store.intro_used("c1", "t2") is False
    assert await store.intro_used("c2", "t1") is False
    with pytest.raises(IntroUsed):
        await book(store, type=BookingType.INTRO, length=15, starts=[SLOT + DAY])
    # Cancelled in time, the intro can be booked again; late, it stays used.
    await store.cancel(intro.id, "c1", "client", T0, SHARE)
    assert await store.intro_used("c1", "t1") is False
    again = (await book(store, type=BookingType.INTRO, length=15)).bookings[0]
    late = await store.cancel(again.id, "c1", "client", SLOT - H, SHARE)
    assert late.state is BookingState.LATE_CANCELLED and late.fee_minor == 0
    with pytest.raises(IntroUsed):
        await book(store, type=BookingType.INTRO, length=15, starts=[SLOT + DAY])
    with pytest.raises(ValueError):
        await store.create(
            therapist_id="t1",
            client_id="c1",
            type="intro",
            starts=[SLOT],
            length_min=15,
            buffer_min=0,
            price_minor=1,
            policy=POLICY,
            created_by="c1",
            created_by_role="client",
            idempotency_key=None,
            now=T0,
        )
    await sound(store.ledger)


async def test_the_buffer_keeps_time_on_both_sides(store: Bookings) -> None:
    await store.ledger.topup("c1", 10 * PRICE, "pay_1", T0)
    await book(store)  # 09:00-09:50, keeps until 10:00
    for start in (SLOT + 55 * 60, SLOT - 55 * 60, SLOT + 30 * 60, SLOT):
        with pytest.raises(SlotTaken):
            await book(store, starts=[start])
    after = await book(store, starts=[SLOT + H])  # 10:00: right after the buffer
    before = await book(store, starts=[SLOT - H])  # 08:00-08:50, keeps until 09:00
    assert [b.start for b in after.bookings + before.bookings] == [SLOT + H, SLOT - H]
    # Another therapist's calendar is its own.
    await book(store, therapist="t2")
    assert await store.busy("t1", SLOT - DAY, SLOT + DAY) == [
        (SLOT - H, SLOT - 10 * 60),
        (SLOT, SLOT + 50 * 60),
        (SLOT + H, SLOT + H + 50 * 60),
    ]
    # busy() reaches bookings whose buffer touches the range.
    assert await store.busy("t1", SLOT + H + 55 * 60, SLOT + 3 * H) == [
        (SLOT + H, SLOT + H + 50 * 60)
    ]
    assert await store.busy("t1", SLOT + 2 * H, SLOT + 3 * H) == []
    await sound(store.ledger)


async def test_a_weekly_series_is_all_or_nothing(store: Bookings, db: Database) -> None:
    await store.ledger.topup("c1", 10 * PRICE, "pay_1", T0)
    await store.ledger.topup("c2", 10 * PRICE, "pay_2", T0)
    weeks = [SLOT + i * 7 * DAY for i in range(4)]
    # Someone else has week 3.
    await book(store, client="c2", starts=[weeks[2] + 30 * 60])
    with pytest.raises(SlotTaken):
        await book(store, starts=weeks)
    assert await count_rows(db, bookings) == 1
    assert await store.ledger.held("c1") == 0
    # Not enough money for all four: none.
    await store.ledger.topup("c3", 3 * PRICE, "pay_3", T0)
    with pytest.raises(InsufficientFunds) as caught:
        await book(store, client="c3", therapist="t2", starts=weeks)
    assert caught.value.fields["required_minor"] == 4 * PRICE
    assert await count_rows(db, bookings) == 1
    # With the room and the money: four bookings, one series, four holds.
    made = (await book(store, therapist="t2", starts=weeks)).bookings
    assert [b.start for b in made] == weeks
    assert len({b.series_id for b in made}) == 1 and made[0].series_id is not None
    assert await store.ledger.held("c1") == 4 * PRICE
    # A series that overlaps itself is refused too (the database's guarantee).
    with pytest.raises(SlotTaken):
        await book(store, therapist="t3", starts=[SLOT, SLOT + 30 * 60])
    with pytest.raises(InvalidField):
        await book(store, therapist="t3", starts=[SLOT, SLOT])
    assert await count_rows(db, bookings) == 5
    await sound(store.ledger)


async def test_a_create_is_idempotent_per_creator_and_key(store: Bookings, db: Database) -> None:
    await store.ledger.topup("c1", 10 * PRICE, "pay_1", T0)
    weeks = [SLOT + i * 7 * DAY for i in range(3)]
    first = await book(store, starts=weeks, key="key-1")
    again = await book(store, starts=weeks, key="key-1", now=T0 + 5)
    assert again.replayed is True and again.bookings == first.bookings
    assert await store.replay("c1", "key-1") == first.bookings
    assert await store.replay("c1", "key-2") is None
    assert await store.replay("c2", "key-1") is None
    # The key answers what it made, whatever the retry asks.
    other = await book(store, starts=[SLOT + DAY], key="key-1")
    assert other.replayed is True and other.bookings == first.bookings
    assert await count_rows(db, bookings) == 3
    assert await store.ledger.held("c1") == 3 * PRICE
    # Another creator's key is its own.
    op = await book(store, starts=[SLOT + DAY], key="key-1", by="op1", role="operator")
    assert op.replayed is False and op.bookings[0].created_by == "op1"
    await sound(store.ledger)


# -- racing servers -------------------------------------------------------------------------


async def test_one_winner_per_slot_across_servers(db: Database, other_db: Database) -> None:
    """30 clients book one therapist's slot at once through two servers (two
    engines): exactly one booking, one hold, the books balanced."""
    stores = [make_store(db), make_store(other_db)]
    clients = [f"c{i}" for i in range(30)]
    for c in clients:
        await stores[0].ledger.topup(c, PRICE, f"pay-{c}", T0)
    # Some aim a little off the hour: any overlap, buffer included, loses.
    results = await outcomes(
        [
            book(stores[i % 2], client=c, starts=[SLOT + (i % 3) * 20 * 60])
            for i, c in enumerate(clients)
        ]
    )
    won = [r for r in results if isinstance(r, Created)]
    lost = [r for r in results if not isinstance(r, Created)]
    assert len(won) == 1, results
    assert all(isinstance(r, SlotTaken) for r in lost), lost
    [winner] = won[0].bookings
    assert await count_rows(db, bookings) == 1
    assert await count_rows(db, wallet_holds) == 1
    for c in clients:
        expected = 0 if c == winner.client_id else PRICE
        assert await stores[1].ledger.available(c) == expected
    await sound(stores[0].ledger)


async def test_racing_retries_of_one_create_make_it_once(db: Database, other_db: Database) -> None:
    stores = [make_store(db), make_store(other_db)]
    await stores[0].ledger.topup("c1", 10 * PRICE, "pay_1", T0)
    weeks = [SLOT + i * 7 * DAY for i in range(2)]
    results = await outcomes([book(stores[i % 2], starts=weeks, key="same-key") for i in range(12)])
    assert all(isinstance(r, Created) for r in results), [
        r for r in results if not isinstance(r, Created)
    ]
    made = [r for r in results if isinstance(r, Created)]
    assert sum(1 for r in made if not r.replayed) == 1
    assert len({tuple(b.id for b in r.bookings) for r in made}) == 1
    assert await count_rows(db, bookings) == 2
    assert await stores[1].ledger.held("c1") == 2 * PRICE
    await sound(stores[0].ledger)


async def test_one_intro_per_pair_across_servers(db: Database, other_db: Database) -> None:
    stores = [make_store(db), make_store(other_db)]
    results = await outcomes(
        [
            book(
                stores[i % 2],
                type=BookingType.INTRO,
                length=15,
                starts=[SLOT + i * H],
            )
            for i in range(10)
        ]
    )
    won = [r for r in results if isinstance(r, Created)]
    assert len(won) == 1, results
    assert all(isinstance(r, IntroUsed) for r in results if not isinstance(r, Created))
    assert await count_rows(db, bookings) == 1


# -- cancelling -----------------------------------------------------------------------------


async def test_cancel_in_time_releases_the_hold(store: Bookings) -> None:
    await store.ledger.topup("c1", PRICE, "pay_1", T0)
    [b] = (await book(store)).bookings
    after = await store.cancel(b.id, "c1", "client", SLOT - 24 * H, SHARE)
    assert after.state is BookingState.CANCELLED and after.fee_minor == 0
    assert after.cancelled_by == "c1" and after.updated_at == SLOT - 24 * H
    assert after.outcome_at is None
    assert await store.get(b.id) == after
    assert await store.ledger.balance("c1") == PRICE
    assert await store.ledger.available("c1") == PRICE
    # Twice: the booking is no longer scheduled.
    with pytest.raises(Conflict):
        await store.cancel(b.id, "c1", "client", SLOT - 24 * H, SHARE)
    with pytest.raises(NotFound):
        await store.cancel("bkg_none", "c1", "client", T0, SHARE)
    # Its time is free again.
    await book(store)
    await sound(store.ledger)


async def test_a_late_cancel_charges_the_fee(store: Bookings) -> None:
    await store.ledger.topup("c1", PRICE + 500, "pay_1", T0)
    [b] = (await book(store)).bookings
    after = await store.cancel(b.id, "c1", "client", SLOT - 24 * H + 1, SHARE)
    assert after.state is BookingState.LATE_CANCELLED and after.fee_minor == PRICE
    assert await store.ledger.balance("c1") == 500 and await store.ledger.held("c1") == 0
    [fee, _] = await store.ledger.transactions("c1", Role.CLIENT)
    assert (fee["kind"], fee["amount_minor"], fee["booking_id"]) == (
        "cancellation_fee",
        -PRICE,
        b.id,
    )
    # The therapist: 50% of its 60% share of the fee.
    [earning] = await store.ledger.transactions("t1", Role.THERAPIST)
    assert (earning["kind"], earning["amount_minor"], earning["booking_id"]) == (
        "earning",
        1800,
        b.id,
    )
    assert await store.ledger.balance("c1") == 500
    await sound(store.ledger)


async def test_a_half_fee_releases_the_rest(db: Database) -> None:
    store = make_store(db)
    await store.ledger.topup("c1", PRICE, "pay_1", T0)
    made = await store.create(
        therapist_id="t1",
        client_id="c1",
        type=BookingType.SESSION,
        starts=[SLOT],
        length_min=50,
        buffer_min=10,
        price_minor=PRICE,
        policy=Policy(cancel_window_h=48, late_fee_pct=50, late_fee_therapist_pct=100),
        created_by="c1",
        created_by_role="client",
        idempotency_key=None,
        now=T0,
    )
    after = await store.cancel(made.bookings[0].id, "c1", "client", SLOT - 47 * H, SHARE)
    assert after.state is BookingState.LATE_CANCELLED and after.fee_minor == 3000
    assert await store.ledger.balance("c1") == 3000 and await store.ledger.available("c1") == 3000
    assert (await store.ledger.earnings("t1"))["available_minor"] == 1800
    await sound(store.ledger)


async def test_a_therapist_or_operator_cancel_never_costs_the_client(store: Bookings) -> None:
    await store.ledger.topup("c1", 2 * PRICE, "pay_1", T0)
    [b1] = (await book(store)).bookings
    [b2] = (await book(store, starts=[SLOT + DAY])).bookings
    first = await store.cancel(b1.id, "t1", "therapist", SLOT - H, SHARE)
    second = await store.cancel(b2.id, "op1", "operator", SLOT + DAY + 60, SHARE)
    for after, by in ((first, "t1"), (second, "op1")):
        assert after.state is BookingState.THERAPIST_CANCELLED
        assert after.fee_minor == 0 and after.cancelled_by == by
    assert await store.ledger.available("c1") == 2 * PRICE
    assert await store.ledger.transactions("t1", Role.THERAPIST) == []
    with pytest.raises(ValueError):
        await store.cancel(b1.id, "x", "nobody", T0, SHARE)
    await sound(store.ledger)


async def test_racing_cancels_settle_once(db: Database, other_db: Database) -> None:
    stores = [make_store(db), make_store(other_db)]
    await stores[0].ledger.topup("c1", PRICE, "pay_1", T0)
    [b] = (await book(stores[0])).bookings
    results = await outcomes(
        [stores[i % 2].cancel(b.id, "c1", "client", SLOT - H, SHARE) for i in range(8)]
    )
    done = [r for r in results if isinstance(r, Booking)]
    assert len(done) == 1, results
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, Booking))
    assert await stores[1].ledger.balance("c1") == 0
    await sound(stores[0].ledger)


# -- outcomes -----------------------------------------------------------------------------------


async def test_occurred_charges_the_price_once(store: Bookings) -> None:
    await store.ledger.topup("c1", PRICE, "pay_1", T0)
    [b] = (await book(store)).bookings
    with pytest.raises(TooEarly):
        await store.mark_outcome(b.id, "occurred", SLOT - 1, SHARE)
    after = await store.mark_outcome(b.id, "occurred", SLOT + 50 * 60, SHARE)
    assert after.state is BookingState.OCCURRED and after.fee_minor == PRICE
    assert after.outcome_at == SLOT + 50 * 60 and after.cancelled_by is None
    assert await store.ledger.balance("c1") == 0
    [charge, _] = await store.ledger.transactions("c1", Role.CLIENT)
    assert (charge["kind"], charge["amount_minor"], charge["booking_id"]) == (
        "booking_charge",
        -PRICE,
        b.id,
    )
    assert (await store.ledger.earnings("t1"))["available_minor"] == 3600
    with pytest.raises(Conflict):
        await store.mark_outcome(b.id, "occurred", SLOT + H, SHARE)
    with pytest.raises(Conflict):
        await store.mark_outcome(b.id, "no_show", SLOT + H, SHARE)
    with pytest.raises(Conflict):
        await store.cancel(b.id, "c1", "client", SLOT + H, SHARE)
    with pytest.raises(InvalidField):
        await store.mark_outcome(b.id, "maybe", SLOT + H, SHARE)
    with pytest.raises(NotFound):
        await store.mark_outcome("bkg_none", "occurred", SLOT + H, SHARE)
    await sound(store.ledger)


async def test_a_no_show_charges_the_fee_and_an_intro_nothing(store: Bookings) -> None:
    await store.ledger.topup("c1", PRICE, "pay_1", T0)
    [b] = (await book(store)).bookings
    after = await store.mark_outcome(b.id, "no_show", SLOT + 20 * 60, SHARE)
    assert after.state is BookingState.NO_SHOW and after.fee_minor == PRICE
    assert (await store.ledger.earnings("t1"))["available_minor"] == 1800
    [intro] = (await book(store, type=BookingType.INTRO, length=15, starts=[SLOT + DAY])).bookings
    marked = await store.mark_outcome(intro.id, "occurred", SLOT + DAY + 900, SHARE)
    assert marked.state is BookingState.OCCURRED and marked.fee_minor == 0
    assert await store.ledger.balance("c1") == 0
    await sound(store.ledger)


async def test_racing_outcomes_settle_once(db: Database, other_db: Database) -> None:
    stores = [make_store(db), make_store(other_db)]
    await stores[0].ledger.topup("c1", PRICE, "pay_1", T0)
    [b] = (await book(stores[0])).bookings
    results = await outcomes(
        [
            stores[i % 2].mark_outcome(b.id, "occurred" if i % 3 else "no_show", SLOT + H, SHARE)
            for i in range(8)
        ]
    )
    assert len([r for r in results if isinstance(r, Booking)]) == 1, results
    assert await stores[1].ledger.balance("c1") == 0
    async with db.engine.connect() as conn:
        kinds = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM ledger_transactions "
                    "WHERE kind IN ('booking_charge', 'cancellation_fee')"
                )
            )
        ).scalar()
    assert kinds == 1
    await sound(stores[0].ledger)


# -- reads for the routes, the loops and the guard ------------------------------------------------


async def test_lists_by_user_and_range(store: Bookings) -> None:
    for c in ("c1", "c2"):
        await store.ledger.topup(c, 10 * PRICE, f"pay-{c}", T0)
    [a] = (await book(store, client="c1")).bookings
    [b] = (await book(store, client="c2", therapist="t2")).bookings
    [c] = (await book(store, client="c1", therapist="t2", starts=[SLOT + DAY])).bookings
    assert await store.list_for("c1", "client", T0, T0 + 7 * DAY) == [a, c]
    assert await store.list_for("t2", "therapist", T0, T0 + 7 * DAY) == [b, c]
    assert await store.list_for("t2", "therapist", SLOT + H, T0 + 7 * DAY) == [c]
    # A booking under way at the range's start is in it.
    assert await store.list_for("c1", "client", SLOT + 10 * 60, SLOT + 20 * 60) == [a]
    assert await store.list_for("c1", "client", SLOT + 50 * 60, SLOT + DAY) == []
    assert await store.list_all(T0, T0 + 7 * DAY) == [a, b, c]
    assert await store.list_for("op", "operator", T0, T0 + 7 * DAY) == [a, b, c]
    with pytest.raises(ValueError):
        await store.list_for("x", "nobody", T0, T0 + DAY)


async def test_unmarked_reminders_guard_and_session(
    store: Bookings, db: Database, other_db: Database
) -> None:
    await store.ledger.topup("c1", 10 * PRICE, "pay_1", T0)
    [a] = (await book(store)).bookings
    [b] = (await book(store, therapist="t2", starts=[SLOT + 2 * H])).bookings
    [c] = (await book(store, therapist="t3", starts=[SLOT + 2 * DAY])).bookings
    # Unmarked: still scheduled 48 h after the end.
    assert await store.unmarked(a.end + 48 * H - 1) == []
    assert await store.unmarked(b.end + 48 * H) == [a, b]
    await store.mark_outcome(a.id, "occurred", a.end, SHARE)
    assert [x.id for x in await store.unmarked(b.end + 48 * H)] == [b.id]
    # Reminders 24 h ahead, claimed once across servers.
    due = await store.due_reminders(SLOT - 22 * H, 24 * H)
    assert [x.id for x in due] == [b.id]  # a is no longer scheduled; c is further out
    other = make_store(other_db)
    claims = await asyncio.gather(
        *(s.mark_reminded(b.id, SLOT - 22 * H) for s in [store, other] * 4)
    )
    assert sorted(claims) == [False] * 7 + [True]
    assert await store.due_reminders(SLOT - 22 * H, 24 * H) == []
    reminded = await store.get(b.id)
    assert reminded is not None and reminded.reminded_at == SLOT - 22 * H
    # The quick-connect guard: therapists whose scheduled booking starts in the range.
    assert await store.next_start(SLOT, SLOT + 2 * H) == {"t2"}
    assert await store.next_start(SLOT + 2 * H + 1, SLOT + 2 * DAY) == {"t3"}
    assert await store.next_start(T0, T0 + 7 * DAY) == {"t2", "t3"}
    await store.cancel(c.id, "t3", "therapist", T0, SHARE)
    assert await store.next_start(T0, T0 + 7 * DAY) == {"t2"}
    # The booking's call: the first session attached stays.
    await store.attach_session(b.id, "s-" + b.id)
    await store.attach_session(b.id, "s-other")
    got = await store.get(b.id)
    assert got is not None and got.session_id == "s-" + b.id


async def test_the_database_keeps_the_guarantees_behind_the_store(
    store: Bookings, db: Database
) -> None:
    """A row written around the store's check still cannot overlap a
    scheduled booking (PostgreSQL's exclusion constraint, SQLite's trigger),
    while cancelled ones keep no time."""
    await store.ledger.topup("c1", 10 * PRICE, "pay_1", T0)
    [b] = (await book(store)).bookings
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(bookings).where(bookings.c.id == b.id))).mappings().one()
    clash = {**row, "id": "bkg_clash", "client_id": "c9", "idempotency_key": None}
    with pytest.raises(Exception, match="bookings_no_overlap"):
        async with db.engine.begin() as conn:
            await conn.execute(bookings.insert().values(**clash))
    async with db.engine.begin() as conn:
        await conn.execute(bookings.insert().values(**{**clash, "state": "cancelled"}))
    assert await count_rows(db, bookings) == 2


# -- quick connect spends only what is not held ---------------------------------------------------


async def test_quick_connect_counts_only_money_not_held(store: Bookings, db: Database) -> None:
    """POST /v1/requests' 402 check (Dispatcher.create_request) asks the ledger
    what the client may spend: the price of a booked session is not there."""
    from cryptography.fernet import Fernet

    from core.bus import LocalBus
    from core.identity import User
    from dispatch.metrics import Metrics
    from dispatch.service import Dispatcher
    from pool.effects import Effect
    from pool.memory import MemoryPool
    from pool.model import Draft, Timeouts
    from signaling.crypto import Cipher
    from signaling.ice import make_provider
    from signaling.records import Records

    dispatcher = Dispatcher(
        MemoryPool(Timeouts()),
        LocalBus[Effect](),
        Metrics(),
        make_provider([], None, None, 600),
        Records(db, Cipher([Fernet.generate_key().decode()])),
        store.ledger,
        min_balance_minor=1500,
        clock=lambda: T0,
    )
    client = User("c1", Role.CLIENT)
    draft = Draft(region="GB", language="en", topics=("anxiety",))
    await store.ledger.topup("c1", PRICE + 1000, "pay_1", T0)
    [b] = (await book(store)).bookings
    with pytest.raises(InsufficientFunds) as caught:
        await dispatcher.create_request(client, draft, None)
    assert caught.value.fields == {"balance_minor": 1000, "required_minor": 1500}
    await store.cancel(b.id, "c1", "client", T0, SHARE)
    request, created = await dispatcher.create_request(client, draft, None)
    assert created is not None and request.client_id == "c1"
