"""Wallet, ledger and therapist earnings (PROTOCOL.md §6).

* :mod:`wallet.billing`: the arithmetic of charges, shares and payout dates (pure).
* :mod:`wallet.ledger`: the double-entry ledger in the durable store: balances,
  top-ups, session charges, withdrawals and the audit.
* :mod:`wallet.metering`: per-minute billing of live sessions.
* :mod:`wallet.routes`: the HTTP calls.
"""
