"""Texts and emails to people who are not looking (PROTOCOL.md §7).

Built so far (issue #12, in progress):

* :mod:`notify.texts`: the pure decision of who gets a text about a waiting
  request (eligibility, opt-in, busy, watching, quiet hours in the
  therapist's zone, cooldown, cap, order);
* :mod:`notify.phone`: phone numbers checked and put in E.164;
* :mod:`notify.outbox`, :mod:`notify.tables`: the durable outbox (queued with
  the decision, taken by one sender at a time with a lease, outcomes and
  provider statuses recorded idempotently);
* :mod:`notify.sms`: the Twilio sender (twilio-python's async client) and the
  worker that drains the outbox's texts through it.

Not yet: the decision loop and its wiring into every server, the therapist's
contact details and self-service profile, the status callback route, emails
over SMTP, the CLI check, metrics and pages.
"""
