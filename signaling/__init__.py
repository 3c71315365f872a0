"""Relaying WebRTC signalling between a session's two participants: built in a later issue."""
