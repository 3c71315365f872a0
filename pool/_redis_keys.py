"""Key names of the Redis pool.

Every key starts with ``<prefix>:{pool}:``, so every key of the pool carries
the one hash tag ``{pool}`` and lives in the same Redis Cluster slot. One tag,
not one per request, because the pool is one queue: a claim touches the
request, the waiting index, the deadline index and the therapist's hold
together; an expiry also touches the client's active pointer; a reap touches
every connection of a server. Only keys in one slot may meet in one script.
The price is that the pool does not shard across Cluster nodes; it does not
need to (a few thousand small keys).

The Lua scripts build the per-id keys they discover while running (the
client of an expired request, the connections of a reaped server, the
participants and held frames of a session ended past a grace) from the
same base (``ARGV`` prefix); those names must stay in step with this module.
"""

from __future__ import annotations

#: The hash tag every key of the pool shares.
HASH_TAG = "pool"


class Keys:
    """Builds the pool's key names for one ``prefix``."""

    def __init__(self, prefix: str) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            # A brace in the prefix would move the hash tag off ``{pool}``.
            raise ValueError("the key prefix must be non-empty and hold no '{' or '}'")
        self.base = f"{prefix}:{{{HASH_TAG}}}:"
        b = self.base
        #: zset request id -> created_at, waiting requests only (ties sort by id).
        self.waiting = b + "waiting"
        #: zset request id -> expires_at, requests waiting or claimed.
        self.deadlines = b + "deadlines"
        #: set of claimed request ids.
        self.claimed = b + "claimed"
        #: hash therapist id -> "claim:<request id>" or "session:<session id>".
        self.holds = b + "holds"
        #: zset user id -> when the reconnect grace ends.
        self.graces = b + "graces"
        #: hash user id -> sequence number: graces due at the same time fire in arming order.
        self.grace_seq = b + "graceseq"
        #: zset server id -> last heartbeat.
        self.servers = b + "servers"
        #: hash server id -> sequence number of its first heartbeat (reap order).
        self.server_seq = b + "srvseq"
        #: counter behind both sequence numbers.
        self.seq = b + "seq"
        #: set of therapists with at least one connection.
        self.online = b + "online"
        #: set of therapists who said they are available.
        self.available = b + "available"
        #: hash therapist id -> a digest of its profile's JSON (put_profile.lua):
        #: choosing whom to offer a request reads these, and a profile's JSON
        #: only when the process has not parsed that version yet.
        self.profile_versions = b + "profver"
        #: string, expiring: the availability index by region (``avail``)
        #: was built from every available therapist less than its time ago
        #: (offer_candidates.lua builds it again when it is gone).
        self.avail_index = b + "availidx"
        #: zset therapist id -> when it last claimed a request (the offer
        #: ranking's "longest idle", pool.rules.offer_rank).
        self.last_claim = b + "lastclaim"
        #: zset request id -> widened_at: the requests offered to a few
        #: (DISPATCH_OFFER_FANOUT), the due-widening index. Kept by the steps
        #: that create, widen and end a request; a claimed one stays (it keeps
        #: its widened_at and widens again once back to waiting) and is skipped
        #: by the read (due_widenings.lua), which also drops what it finds gone.
        self.widening = b + "widening"
        #: zset bucket -> bucket start: the buckets of the stats history (pool.live).
        self.history = b + "hist"
        #: hash bucket -> that bucket's stats sample, JSON.
        self.history_samples = b + "histsamples"
        #: prefixes the scripts extend with an id (see the module docstring).
        self.req_prefix = b + "req:"
        self.sess_prefix = b + "sess:"

    def req(self, request_id: str) -> str:
        """hash: the request's fields (pool._redis_codec)."""
        return self.req_prefix + request_id

    def active(self, client_id: str) -> str:
        """string: the client's request that is waiting or claimed."""
        return f"{self.base}active:{client_id}"

    def idem(self, client_id: str, key: str) -> str:
        """string ``"<expires at>|<request id>"``: an idempotency key, per client."""
        return f"{self.base}idem:{client_id}:{key}"

    def sess(self, session_id: str) -> str:
        """hash: the session's fields."""
        return self.sess_prefix + session_id

    def held(self, session_id: str, role: str) -> str:
        """list of msgpack frames held for the session's participant of ``role``
        (``client`` or ``therapist``) until it joins. By role, not user id, so
        that a step can name both lists before it has read the session."""
        return f"{self.base}held:{session_id}:{role}"

    def open_session(self, user_id: str) -> str:
        """string: the user's open session id."""
        return f"{self.base}opensess:{user_id}"

    def conns(self, user_id: str) -> str:
        """set of ``"<server>|<conn>"``: the user's live connections."""
        return f"{self.base}conns:{user_id}"

    def server_conns(self, server_id: str) -> str:
        """set of ``"<user>|<conn>"``: the connections a server holds."""
        return f"{self.base}srvconns:{server_id}"

    def profile(self, therapist_id: str) -> str:
        """string: the therapist's profile as JSON."""
        return f"{self.base}profile:{therapist_id}"

    def avail(self, region: str) -> str:
        """set of therapist ids: at least every available therapist whose
        profile names ``region`` (offer_candidates.lua: the choice of a
        region's first few reads only these)."""
        return f"{self.base}avail:{region}"

    def stat(self, name: str) -> str:
        """zset member -> time, for the 15-minute counts (created, matched, ...)."""
        return f"{self.base}st:{name}"

    @property
    def stats(self) -> list[str]:
        """The four event zsets, in PoolStats order."""
        return [self.stat(n) for n in ("created", "matched", "expired", "cancelled")]
