"""quick-connect dispatch: the web service (settings, identity, HTTP and websocket edge)
around the request pool in :mod:`pool`."""
