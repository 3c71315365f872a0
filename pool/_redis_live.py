"""The operator's reads of the Redis pool: the live lists and the stats history
(:mod:`pool.live`). Read-only, apart from :func:`record_sample`'s one script.

:func:`read_live` takes two round trips: one script (``live_indexes.lua``)
reads the indexes as one snapshot (the first :data:`~pool.live.LIVE_LIMIT`
waiting ids and their count, every hold, the online and available sets),
then one pipeline (not a transaction) reads
the records they name. A record that changed between the two (a request
claimed meanwhile, a session ended) is left out rather than shown in a state
its list does not hold; the next read shows it where it went.
"""

from __future__ import annotations

import json
from typing import Any

from redis.commands.core import AsyncScript

from pool._redis_client import Client
from pool._redis_codec import decode_hold, decode_request, decode_session, num, text
from pool._redis_keys import Keys
from pool.live import (
    HISTORY_WINDOW_S,
    LIVE_LIMIT,
    LiveClaim,
    LiveRequest,
    LiveSession,
    LiveTherapist,
    PoolLive,
)
from pool.model import State, TherapistProfile


async def read_live(client: Client, script: AsyncScript, keys: Keys, now: float) -> PoolLive:
    """``script`` is ``live_indexes.lua``, registered on ``client``."""
    waiting_ids, waiting_total, holds_flat, online_raw, available_raw = await script(
        keys=[keys.waiting, keys.holds, keys.online, keys.available], args=[LIVE_LIMIT]
    )
    holds = {
        text(t): decode_hold(h) for t, h in zip(holds_flat[::2], holds_flat[1::2], strict=True)
    }
    claims = {t: h.id for t, h in holds.items() if h is not None and h.kind == "claim"}
    sessions = {t: h.id for t, h in holds.items() if h is not None and h.kind == "session"}
    online = sorted(text(t) for t in online_raw)
    available = {text(t) for t in available_raw}
    rids = [text(r) for r in waiting_ids]

    async with client.pipeline(transaction=False) as pipe:
        for rid in rids:
            pipe.hgetall(keys.req(rid))
        for rid in claims.values():
            pipe.hgetall(keys.req(rid))
        for sid in sessions.values():
            pipe.hgetall(keys.sess(sid))
        for tid in online:
            pipe.get(keys.profile(tid))
        replies = iter(await pipe.execute())

    waiting = []
    for _ in rids:
        req = decode_request(next(replies))
        if req is not None and req.state is State.WAITING:
            waiting.append(LiveRequest.of(req))
    live_claims = []
    for tid in claims:
        req = decode_request(next(replies))
        claim = None if req is None or req.state is not State.CLAIMED else LiveClaim.of(req)
        if claim is not None and claim.therapist_id == tid:
            live_claims.append(claim)
    live_sessions = []
    for _ in sessions:
        session = decode_session(next(replies))
        if session is not None and session.is_open:
            live_sessions.append(LiveSession.of(session))
    therapists = []
    for tid in online:
        profile_raw = next(replies)
        name = (
            TherapistProfile.from_record(json.loads(profile_raw)).name
            if profile_raw is not None
            else ""
        )
        therapists.append(LiveTherapist(tid, name, tid in available, tid in holds))
    return PoolLive.build(now, waiting, int(waiting_total), live_claims, live_sessions, therapists)


async def record_sample(
    script: AsyncScript, keys: Keys, bucket: int, sample: dict[str, Any]
) -> bool:
    body = json.dumps(sample, separators=(",", ":"), allow_nan=False)
    added = await script(
        keys=[keys.history, keys.history_samples],
        args=[bucket, body, bucket - HISTORY_WINDOW_S],
    )
    return bool(added)


async def history(client: Client, keys: Keys, now: float) -> list[dict[str, Any]]:
    buckets: list[Any] = await client.zrangebyscore(
        keys.history, num(now - HISTORY_WINDOW_S), "+inf"
    )
    if not buckets:
        return []
    bodies = await client.hmget(keys.history_samples, buckets)
    # A bucket trimmed between the two reads has no body any more: skipped.
    return [json.loads(b) for b in bodies if b is not None]
