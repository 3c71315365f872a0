"""Wallet, ledger and therapist earnings (PROTOCOL.md §6): built in a later issue."""
