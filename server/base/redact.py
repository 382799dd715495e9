"""Keep credentials out of logs, errors and /status."""

from __future__ import annotations

import re

# user:password@ or token@ in any URL, and http.extraheader-style bearer tokens.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*\w+\s+)\S+")
_QUERY_TOKEN = re.compile(r"([?&]token=)[^&\s\"']+")
# What every pattern above needs to match: most text (each access log line) has none of it,
# and one search is cheaper than three substitutions.
_MAY_HOLD_CREDENTIAL = re.compile(r"://|token=|(?i:authorization)")


def redact(text: str) -> str:
    """Text with URL credentials, ``token=`` query values and auth headers replaced by ``***``."""
    if not _MAY_HOLD_CREDENTIAL.search(text):
        return text
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    text = _QUERY_TOKEN.sub(lambda m: m.group(1) + "***", text)
    return _AUTH_HEADER.sub(lambda m: m.group(1) + "***", text)
