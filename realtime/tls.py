"""TLS for a hub that serves clients without a proxy: one server context, reloadable.

:func:`tls_context` builds the ``ssl.SSLContext`` the listener serves ``wss://``
and ``https://`` with; :func:`reload_tls` loads the files again into the same
context (``realtime serve`` calls it on SIGHUP), so handshakes from then on use
the new certificate while open connections keep theirs.
"""

from __future__ import annotations

import ssl

from protocol.errors import RealtimeError

__all__ = ["TlsError", "reload_tls", "tls_context"]


class TlsError(RealtimeError):
    """The certificate or key cannot be loaded; ``str(error)`` is one line."""


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context holding ``cert`` (a PEM chain, leaf first) and its PEM ``key``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, cert, key)
    return context


def reload_tls(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Load ``cert`` and ``key`` again into ``context``; raise :class:`TlsError` and keep the old pair.

    The files are tried on a scratch context first: a failed load into the live one
    could leave it holding a certificate without its key.
    """
    _load(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), cert, key)
    _load(context, cert, key)


def _load(context: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TlsError(f"cannot load the certificate and key: {exc.reason or exc}") from None
    except OSError as exc:
        raise TlsError(f"cannot read the certificate or key: {exc.strerror or exc}") from None
