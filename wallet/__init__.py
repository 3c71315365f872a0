"""Wallet, ledger and therapist earnings (PROTOCOL.md §6).

* :mod:`wallet.billing`: the arithmetic of charges, shares and payout dates (pure).
* :mod:`wallet.ledger`: the double-entry ledger in the durable store: balances,
  top-ups, session charges, withdrawals and the audit.
* :mod:`wallet.tables`: its tables.

Per-minute billing of a live session is signaling's (:mod:`signaling.metering`,
which owns the sessions table and calls the ledger); the HTTP calls are the
app's (:mod:`dispatch.wallet_routes`).
"""
