"""The server side of HTTPS: one TLS context from ``--tls-cert`` and ``--tls-key``."""

from __future__ import annotations

import ssl

from ..base.errors import SettingsError


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    """The server-side TLS context, or None (no certificate) to serve plain HTTP."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"cannot load --tls-cert/--tls-key: {exc}") from None
    return context
