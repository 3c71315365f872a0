"""Prometheus metrics of one server process (``GET /metrics``).

Counters and histograms count what this process did; sum them across
servers. The ``dispatch_pool_*`` gauges are the whole service's pool as read
from the shared store, so every server reports the same value: take ``max``
across servers, not ``sum``.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from notify.outbox import CHANNELS
from notify.tables import STATES
from pool.model import PoolStats

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_WAIT_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200)
_OFFER_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.waiting = Gauge("dispatch_pool_waiting", "Requests waiting", registry=r)
        self.claimed = Gauge("dispatch_pool_claimed", "Requests claimed", registry=r)
        self.online = Gauge(
            "dispatch_pool_therapists_online", "Therapists with a console open", registry=r
        )
        self.available = Gauge(
            "dispatch_pool_therapists_available", "Therapists online and available", registry=r
        )
        self.busy = Gauge(
            "dispatch_pool_therapists_busy", "Therapists holding a claim or session", registry=r
        )
        self.oldest_wait = Gauge(
            "dispatch_pool_oldest_wait_seconds", "Age of the oldest waiting request", registry=r
        )
        self.wait_time = Histogram(
            "dispatch_wait_seconds",
            "Time from request to claim, for matched requests",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.requests_created = Counter("dispatch_requests_created", "Requests created", registry=r)
        self.claims = Counter(
            "dispatch_claims", "Claim attempts by outcome", ["outcome"], registry=r
        )
        self.expiries = Counter(
            "dispatch_expiries", "Requests expired, by reason", ["reason"], registry=r
        )
        self.cancellations = Counter(
            "dispatch_cancellations", "Requests cancelled by their client", registry=r
        )
        self.matches = Counter("dispatch_matches", "Requests matched", registry=r)
        self.connections = Gauge(
            "dispatch_ws_connections", "Open websocket connections", ["role"], registry=r
        )
        self.frames_in = Counter(
            "dispatch_ws_frames_in", "Frames received, by type", ["type"], registry=r
        )
        self.frames_out = Counter(
            "dispatch_ws_frames_out", "Frames queued for sending, by type", ["type"], registry=r
        )
        self.errors = Counter(
            "dispatch_errors", "Error frames and responses, by code", ["code"], registry=r
        )
        self.outbox = Gauge(
            "dispatch_outbox_messages",
            "Texts and emails in the outbox, by channel and state (queued, sending, sent, "
            "delivered, undelivered, failed, dropped)",
            ["channel", "state"],
            registry=r,
        )
        self.outbox_age = Gauge(
            "dispatch_outbox_oldest_due_seconds",
            "Age of the oldest text or email still to send (0 when none)",
            registry=r,
        )
        self.offers_first = Counter(
            "dispatch_offers_first",
            "New requests by whom their first offer went to (DISPATCH_OFFER_FANOUT set): "
            "a few, or everyone (the eligible fit in the fan-out)",
            ["to"],
            registry=r,
        )
        self.offer_first_size = Histogram(
            "dispatch_offer_first_therapists",
            "Therapists a first offer to a few went to",
            buckets=_OFFER_BUCKETS,
            registry=r,
        )
        self.offer_widenings = Counter(
            "dispatch_offer_widenings",
            "Offers to a few widened by this process: to a few more, or opened to everyone",
            ["to"],
            registry=r,
        )
        self.slow_consumers = Counter(
            "dispatch_ws_slow_consumers", "Connections closed for a full send queue", registry=r
        )

    def set_outbox(self, counts: Mapping[tuple[str, str], int], oldest_due_s: float) -> None:
        for channel in CHANNELS:
            for state in STATES:
                self.outbox.labels(channel=channel, state=state).set(
                    counts.get((channel, state), 0)
                )
        self.outbox_age.set(oldest_due_s)

    def set_pool(self, stats: PoolStats) -> None:
        self.waiting.set(stats.waiting)
        self.claimed.set(stats.claimed)
        self.online.set(stats.therapists_online)
        self.available.set(stats.therapists_available)
        self.busy.set(stats.therapists_busy)
        self.oldest_wait.set(stats.oldest_wait_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
