"""Therapists' photos (PROTOCOL.md §7): an uploaded JPEG or PNG, checked,
stripped of its metadata and re-encoded (:mod:`photos.image`, pure), and kept
in the durable store (:mod:`photos.tables`, :mod:`photos.store`).

A domain: it imports only :mod:`core` and third-party libraries; the HTTP
calls are the app's (``dispatch/photo_routes.py``).
"""
