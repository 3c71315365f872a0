"""Scheduled care (PROTOCOL.md §8): therapists' availability, the slots it
opens, bookings (intro calls, sessions, weekly series), their outcomes and the
money each one moves. Pure rules (``model``, ``slots``, ``policy``) and the
durable store over the one database; no web framework. It stands above
``signaling`` and ``notify`` (a booked call is a session; its emails go
through the outbox) and below ``dispatch``.
"""
