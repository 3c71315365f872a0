"""Load scripts run by hand (``make bench``), never timed in unit tests.

- :mod:`loadtest.fanout`: many therapist consoles on several ``dispatch serve``
  processes sharing one Redis, a request broadcast every few hundred
  milliseconds; measures fan-out latency and checks nothing is lost
  (``--floor``: against :mod:`loadtest.floor`, bare websockets + Redis pub/sub).
- :mod:`loadtest.race`: 100 racing claims against 100 pings, one winner.
- :mod:`loadtest.lifecycle`: closed-loop lifecycles from several processes.
- :mod:`loadtest.idle`, :mod:`loadtest.scaleout`: memory per idle console,
  and per-process costs with 2 then 3 servers.
- :mod:`loadtest.bench`: the standard set and issue #16's targets.
"""
