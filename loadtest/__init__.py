"""Load scripts run by hand (``make bench``), never timed in unit tests.

- :mod:`loadtest.fanout`: many therapist consoles on several ``dispatch serve``
  processes sharing one Redis, a request broadcast every few hundred
  milliseconds; measures fan-out latency and checks nothing is lost.
"""
