"""The wallet's double-entry ledger (PROTOCOL.md §6): :class:`Ledger`, put
together from its pieces, and the names other packages import from here.

* :mod:`wallet.accounts`: the values and account ids: the accounts' ids and
  constants, :class:`TxnKind`, :class:`Transaction` and its :class:`Entry`
  legs, and the checks of what callers pass in.
* :mod:`wallet.entries`: :class:`~wallet.entries.LedgerBase`: balances, top-ups,
  refunds and session charges, and how every movement is written (double
  entry, locking, idempotency: its docstring tells).
* :mod:`wallet.payouts`: :class:`WithdrawalState`, :class:`Withdrawal` and
  :class:`~wallet.payouts.Payouts`: a therapist's earnings and withdrawals.
* :mod:`wallet.audit`: :class:`~wallet.audit.Audit`: the check of the books.
* :mod:`wallet.statements`: what each session cost or earned a user.
* :mod:`wallet.checkouts`: :class:`~wallet.checkouts.Checkouts`: clients'
  card top-ups and their crediting (PROTOCOL.md §9).
* :mod:`wallet.holds`: :class:`Hold` and :class:`~wallet.holds.Holds`: money
  kept in a client's wallet for a booking, and its charge or release (§8).
"""

from __future__ import annotations

from wallet.accounts import (
    EXTERNAL_PAYMENTS,
    EXTERNAL_PAYOUTS,
    MAX_AMOUNT_MINOR,
    PLATFORM_REVENUE,
    REFERENCE_MAX,
    Entry,
    Transaction,
    TxnKind,
    check_amount,
    check_reference,
    check_user_id,
    client_account,
    therapist_account,
    withdrawing_account,
)
from wallet.audit import Audit
from wallet.checkouts import Checkouts
from wallet.holds import Hold, Holds, HoldState
from wallet.payouts import AlsoInTxn, Payouts, Withdrawal, WithdrawalState
from wallet.statements import Statements

__all__ = [
    "EXTERNAL_PAYMENTS",
    "EXTERNAL_PAYOUTS",
    "MAX_AMOUNT_MINOR",
    "PLATFORM_REVENUE",
    "REFERENCE_MAX",
    "AlsoInTxn",
    "Entry",
    "Hold",
    "HoldState",
    "Ledger",
    "Transaction",
    "TxnKind",
    "Withdrawal",
    "WithdrawalState",
    "check_amount",
    "check_reference",
    "check_user_id",
    "client_account",
    "therapist_account",
    "withdrawing_account",
]


class Ledger(Payouts, Audit, Statements, Checkouts, Holds):
    """Balances, movements and withdrawals of one deployment (one currency).

    ``therapist_share_pct`` (0..100) splits each session charge
    (:func:`wallet.billing.split`); ``timezone`` (an IANA name) is where a
    withdrawal's payout date is reckoned (:func:`wallet.billing.payout_date`).
    Bad settings raise ``ValueError``.

    The balances and movements are :class:`~wallet.entries.LedgerBase`'s, the
    earnings and withdrawals :class:`~wallet.payouts.Payouts`', the audit
    (:meth:`check`) :class:`~wallet.audit.Audit`'s, the checkouts
    :class:`~wallet.checkouts.Checkouts`', the holds for bookings
    (:meth:`held`, :meth:`available`, :meth:`hold_in`, :meth:`settle_hold_in`,
    :meth:`release_hold_in`) :class:`~wallet.holds.Holds`'.
    """
