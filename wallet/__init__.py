"""Wallet, ledger and therapist earnings (PROTOCOL.md §6).

* :mod:`wallet.billing`: the arithmetic of charges, shares and payout dates (pure).
* :mod:`wallet.ledger`: the double-entry ledger in the durable store
  (:class:`~wallet.ledger.Ledger`): balances, top-ups, session charges,
  withdrawals and the audit, put together from
  :mod:`wallet.accounts` (account ids, values, input checks),
  :mod:`wallet.entries` (balances, movements, double entry and locking),
  :mod:`wallet.payouts` (earnings and withdrawals) and
  :mod:`wallet.audit` (the check of the books).
* :mod:`wallet.tables`: its tables.

Per-minute billing of a live session is signaling's (:mod:`signaling.metering`,
which owns the sessions table and calls the ledger); the HTTP calls are the
app's (:mod:`dispatch.wallet_routes`).
"""
