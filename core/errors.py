"""The one exception tree of quick-connect dispatch.

Every error a user can cause or meet maps one-to-one onto a protocol error
``code`` (PROTOCOL.md) and an HTTP status::

    DispatchError                      code               status
    ├── BadInput                       bad_message        400
    │   ├── InvalidField               invalid_field      422
    │   │   └── InvalidPhone           invalid_phone      422
    │   ├── ConsentRequired            consent_required   422
    │   ├── InvalidImage               invalid_image      422   (not a JPEG/PNG that decodes)
    │   ├── TooLarge                   too_large          413   (a body over its limit)
    │   └── NotBookable                (a booking refused by the rules, §8)   422
    │       ├── OutsideAvailability    outside_availability
    │       ├── TooSoon                too_soon           (inside the minimum notice)
    │       ├── TooEarly               too_early          (an outcome or a join before its time)
    │       ├── IntroUsed              intro_used
    │       ├── IntakeRequired         intake_required
    │       └── Paused                 paused             (a therapist not accepting new clients)
    ├── Unauthorized                   unauthorized       401
    ├── Forbidden                      forbidden          403
    ├── NotFound                       not_found          404
    ├── Conflict                       conflict           409
    │   ├── Taken                      taken              409
    │   ├── Busy                       busy               409
    │   ├── NotEligible                not_eligible       409
    │   ├── RequestExists              request_exists     409
    │   ├── SlotTaken                  slot_taken         409   (a booking overlaps another)
    │   ├── TooLate                    too_late           409   (feedback after its window, §10)
    │   └── Undecryptable              undecryptable      409   (no key opens stored data)
    ├── InsufficientFunds              insufficient_funds 402
    ├── RateLimited                    rate_limited       429
    └── Unavailable                    unavailable        503   (a dependency is down)
        └── PaymentsOff                payments_off       503   (no way to pay in is set up)

This module imports nothing of the project so that the pure pool core can
raise these errors without depending on the web layer.
"""

from __future__ import annotations


class DispatchError(Exception):
    """Root of every error the service raises on purpose."""

    code = "internal"
    status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None, **fields: object) -> None:
        self.message = message or self.default_message
        self.fields = fields
        super().__init__(self.message)

    def as_body(self) -> dict[str, object]:
        """The error in the HTTP shape ``{"error": {"code", "message", ...}}``."""
        return {"error": {"code": self.code, "message": self.message, **self.fields}}


class BadInput(DispatchError):
    code = "bad_message"
    status = 400
    default_message = "bad input"


class InvalidField(BadInput):
    code = "invalid_field"
    status = 422
    default_message = "a field is invalid"


class InvalidPhone(InvalidField):
    code = "invalid_phone"
    default_message = (
        "phone must be a mobile number with its country code, e.g. +44 7700 900123 (E.164)"
    )


class ConsentRequired(BadInput):
    code = "consent_required"
    status = 422
    default_message = "a guardian's consent is required for a client under 18"


class InvalidImage(BadInput):
    """A body that should be an image and is not one we take: another type, a
    declared type its bytes do not match, or bytes that do not decode (truncated,
    corrupt, a decompression bomb)."""

    code = "invalid_image"
    status = 422
    default_message = "the body must be a JPEG or PNG image that decodes"


class TooLarge(BadInput):
    """A body over its limit, refused before it is read whole."""

    code = "too_large"
    status = 413
    default_message = "the request body is too large"


class NotBookable(BadInput):
    """A booking, or a step of one, that the scheduling rules refuse (PROTOCOL.md §8)."""

    code = "not_bookable"
    status = 422
    default_message = "that booking cannot be made"


class OutsideAvailability(NotBookable):
    code = "outside_availability"
    default_message = "that time is outside the therapist's availability"


class TooSoon(NotBookable):
    code = "too_soon"
    default_message = "that time is inside the minimum notice"


class TooEarly(NotBookable):
    code = "too_early"
    default_message = "it is too early for that"


class IntroUsed(NotBookable):
    code = "intro_used"
    default_message = "the free intro call with this therapist has been used"


class IntakeRequired(NotBookable):
    code = "intake_required"
    default_message = "the intake forms must be done before a session is booked"


class Paused(NotBookable):
    code = "paused"
    default_message = "this therapist is not accepting new clients"


class Unauthorized(DispatchError):
    code = "unauthorized"
    status = 401
    default_message = "missing, expired or invalid token"


class Forbidden(DispatchError):
    code = "forbidden"
    status = 403
    default_message = "not allowed for this user"


class NotFound(DispatchError):
    code = "not_found"
    status = 404
    default_message = "no such thing"


class Conflict(DispatchError):
    code = "conflict"
    status = 409
    default_message = "conflicts with the current state"


class Taken(Conflict):
    code = "taken"
    default_message = "the request is no longer waiting"


class Busy(Conflict):
    code = "busy"
    default_message = "you already hold a claim or an open session"


class NotEligible(Conflict):
    code = "not_eligible"
    default_message = "you may not take this request"


class RequestExists(Conflict):
    code = "request_exists"
    default_message = "you already have a request waiting or claimed"


class Undecryptable(Conflict):
    """Stored data that no key in ``DISPATCH_DATA_KEY`` opens: a key was rotated
    away too soon, or the server runs with another key than wrote the data.
    The data is still there; the fix is the operator's (the message says
    which setting), so the answer is a clear 409, never a 500."""

    code = "undecryptable"
    default_message = "stored data cannot be decrypted with the configured DISPATCH_DATA_KEY"


class SlotTaken(Conflict):
    code = "slot_taken"
    default_message = "that time has just been booked by someone else"


class TooLate(Conflict):
    """Something whose time has passed: feedback more than 7 days after its
    session's end (PROTOCOL.md §10)."""

    code = "too_late"
    default_message = "it is too late for that"


class InsufficientFunds(DispatchError):
    code = "insufficient_funds"
    status = 402
    default_message = "not enough funds in the wallet"


class RateLimited(DispatchError):
    code = "rate_limited"
    status = 429
    default_message = "too many messages; slow down"


class Unavailable(DispatchError):
    code = "unavailable"
    status = 503
    default_message = "a dependency is unavailable; try again"


class PaymentsOff(Unavailable):
    """Paying in (PROTOCOL.md §9) is not set up on this deployment: no Stripe
    keys, and not ``--dev`` (whose test payments stand in for them). The fix
    is the operator's; a client can only top up another way."""

    code = "payments_off"
    default_message = "card payments are not set up on this server"
