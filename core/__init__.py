"""The base floor: what every domain and the app stand on, importing nothing of
the project (import-linter keeps it so).

* :mod:`core.errors`: the one exception tree (protocol error codes).
* :mod:`core.logs`: structured logging with redaction.
* :mod:`core.clock`: the clock type and the protocol's time format.
* :mod:`core.identity`: roles, users and tokens (PROTOCOL.md §2).
* :mod:`core.wire`: the wire data model and its JSON/MessagePack codecs.
* :mod:`core.validation`: id and request-body primitives.
* :mod:`core.db`, :mod:`core.tables`, :mod:`core.migrations`: the durable
  store's engine, shared metadata and schema history.
* :mod:`core.bus`: the cross-server bus (in-process or Redis pub/sub).
"""
