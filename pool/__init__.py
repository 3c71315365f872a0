"""The request pool: pure rules (``model``, ``rules``, ``effects``) and two
adapters that apply them atomically (``memory`` in-process, ``redis_store``)."""
