"""Notifications to users who are not connected: built in a later issue."""
