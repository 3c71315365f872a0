"""dispatch.ratelimit: token-bucket arithmetic and the keyed LRU limiter."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.ratelimit import KeyedLimiter, TokenBucket


def test_starts_full_then_refuses() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after(0.0) == 1.0


def test_refill_arithmetic() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=4)
    for _ in range(4):
        assert bucket.allow(10.0)
    assert not bucket.allow(10.0)
    assert bucket.retry_after(10.0) == 0.5
    assert bucket.retry_after(10.25) == 0.25
    assert not bucket.allow(10.25)  # 0.5 tokens
    assert bucket.tokens(10.25) == 0.5  # the refusal spent nothing
    assert bucket.allow(10.5)  # 1.0 token
    assert not bucket.allow(10.5)
    assert bucket.allow(11.5, cost=2.0)  # 2 tokens gained
    assert bucket.retry_after(11.5, cost=3.0) == 1.5


def test_refill_caps_at_burst() -> None:
    bucket = TokenBucket(rate_per_s=5.0, burst=2)
    assert bucket.allow(0.0) and bucket.allow(0.0)
    assert bucket.tokens(1000.0) == 2.0
    assert bucket.allow(1000.0) and bucket.allow(1000.0)
    assert not bucket.allow(1000.0)


def test_cost() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=5)
    assert bucket.allow(0.0, cost=5)
    assert not bucket.allow(0.0, cost=0.5)
    assert bucket.allow(0.0, cost=0)
    assert bucket.retry_after(0.0, cost=0) == 0.0
    with pytest.raises(ValueError):
        bucket.allow(0.0, cost=-1)


def test_cost_above_burst_never_allowed() -> None:
    bucket = TokenBucket(rate_per_s=100.0, burst=3)
    assert not bucket.allow(1e6, cost=4)
    assert bucket.retry_after(1e6, cost=4) == math.inf
    assert bucket.allow(1e6, cost=3)


def test_zero_rate_never_refills() -> None:
    bucket = TokenBucket(rate_per_s=0.0, burst=1)
    assert bucket.allow(0.0)
    assert not bucket.allow(1e9)
    assert bucket.retry_after(1e9) == math.inf


def test_clock_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1)
    assert bucket.allow(10.0)
    assert not bucket.allow(5.0)
    assert bucket.retry_after(5.0) == 1.0  # nothing gained, measured from the latest time
    assert not bucket.allow(10.5)  # the backwards step did not move the clock back
    assert bucket.allow(11.0)


@pytest.mark.parametrize(("rate", "burst"), [(-1.0, 1), (math.inf, 1), (math.nan, 1), (1.0, 0)])
def test_bad_arguments(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
    with pytest.raises(ValueError):
        KeyedLimiter(rate, burst)


def test_keyed_bad_max_keys() -> None:
    with pytest.raises(ValueError):
        KeyedLimiter(1.0, 1, max_keys=0)


# -- properties ----------------------------------------------------------------------------


@given(
    rate=st.floats(min_value=0.0, max_value=1000.0),
    burst=st.integers(min_value=1, max_value=100),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=10.0),
            st.floats(min_value=0.0, max_value=20.0),
        ),
        max_size=200,
    ),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, float]]
) -> None:
    bucket = TokenBucket(rate, burst)
    start = now = 1000.0
    spent = 0.0
    for dt, cost in steps:
        now += dt
        if bucket.allow(now, cost):
            spent += cost
        bound = burst + rate * (now - start)
        assert spent <= bound * (1 + 1e-9) + 1e-9


# Dyadic rationals (multiples of 1/4, small) are exact in binary floating point, so the
# bucket must agree with an exact model decision for decision.
_quarters = st.integers(min_value=0, max_value=40).map(lambda q: q / 4)


@given(
    rate=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),
    burst=st.integers(min_value=1, max_value=8),
    steps=st.lists(
        st.tuples(_quarters, st.sampled_from([0.5, 1.0, 2.0, 3.0])),
        max_size=100,
    ),
)
def test_agrees_with_exact_model(rate: float, burst: int, steps: list[tuple[float, float]]) -> None:
    bucket = TokenBucket(rate, burst)
    tokens = Fraction(burst)
    now = Fraction(0)
    spent = Fraction(0)
    for dt, cost in steps:
        now += Fraction(dt)
        tokens = min(Fraction(burst), tokens + Fraction(dt) * Fraction(rate))
        expected = tokens >= Fraction(cost)
        if expected:
            tokens -= Fraction(cost)
            spent += Fraction(cost)
        assert bucket.allow(float(now), cost) is expected
        assert Fraction(bucket.tokens(float(now))) == tokens
        assert spent <= burst + Fraction(rate) * now
        if not expected and cost <= burst:
            wait = bucket.retry_after(float(now), cost)
            assert Fraction(wait) == (Fraction(cost) - tokens) / Fraction(rate)


@given(
    rate=st.floats(min_value=0.01, max_value=100.0),
    burst=st.integers(min_value=1, max_value=50),
    cost=st.floats(min_value=0.0, max_value=50.0),
    start=st.floats(min_value=0.0, max_value=1e6),
)
def test_retry_after_is_honest(rate: float, burst: int, cost: float, start: float) -> None:
    """Drained, then waiting retry_after (plus rounding slack) is enough, and less is not."""
    patient, hasty = TokenBucket(rate, burst), TokenBucket(rate, burst)
    assert patient.allow(start, burst) and hasty.allow(start, burst)
    wait = patient.retry_after(start, cost)
    if cost > burst:
        assert wait == math.inf
        return
    assert wait == pytest.approx(cost / rate)
    assert patient.allow(start + wait * (1 + 1e-9) + 1e-9, cost)
    if wait > 1e-6:
        assert not hasty.allow(start + wait * 0.99, cost)


# -- keyed ---------------------------------------------------------------------------------


def test_keys_are_independent() -> None:
    limiter = KeyedLimiter(rate_per_s=1.0, burst=2)
    assert limiter.allow("u1", 0.0) and limiter.allow("u1", 0.0)
    assert not limiter.allow("u1", 0.0)
    assert limiter.retry_after("u1", 0.0) == 1.0
    assert limiter.allow("u2", 0.0)
    assert limiter.retry_after("u3", 0.0) == 0.0  # unknown key: full bucket
    assert "u3" not in limiter  # retry_after does not create buckets
    assert limiter.allow("u1", 1.0)
    assert len(limiter) == 2


def test_lru_eviction() -> None:
    limiter = KeyedLimiter(rate_per_s=0.0, burst=1, max_keys=2)
    assert limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)
    assert not limiter.allow("a", 1.0)  # touches "a": now "b" is least recently used
    assert limiter.allow("c", 2.0)  # evicts "b"
    assert len(limiter) == 2
    assert "b" not in limiter and "a" in limiter and "c" in limiter
    assert not limiter.allow("a", 3.0)  # "a" kept its (empty) bucket
    assert limiter.allow("b", 3.0)  # "b" comes back with a full bucket (evicts "c")
    assert "c" not in limiter


def test_eviction_bounds_memory() -> None:
    limiter = KeyedLimiter(rate_per_s=1.0, burst=1, max_keys=100)
    for i in range(10_000):
        limiter.allow(f"user-{i}", float(i))
    assert len(limiter) == 100
    assert "user-9999" in limiter and "user-9899" not in limiter
