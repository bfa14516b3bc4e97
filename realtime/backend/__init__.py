"""What the hub sends to the app's backend: proxied decisions and events (docs/integration.md).

:mod:`~realtime.backend.signing` signs every request the hub makes, so a backend can trust it.
"""
