"""Texts and emails to people who are not looking (PROTOCOL.md §7).

Built so far (issue #12, in progress): the pure decision of who gets a text
about a waiting request (:mod:`notify.texts`: eligibility, opt-in, busy,
watching, quiet hours in the therapist's zone, cooldown, cap, order) and
phone numbers checked and put in E.164 (:mod:`notify.phone`). Not yet: the
outbox, the Twilio and SMTP senders, the status callback, the profile calls.
"""
