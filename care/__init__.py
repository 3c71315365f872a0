"""Care records (PROTOCOL.md §10): safeguarding concerns and session feedback.

Forms, consent, referrals, export and erasure come later (issue #15).
"""
