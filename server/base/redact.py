"""Keep credentials out of logs, errors and /status.

Git URL credentials are redacted in two steps. First the *known* URLs: the
server tells :func:`remember_url` which ``--repo`` it uses, and every spelling
of that URL's credentials (as given, percent-decoded, percent-encoded, escaped
in JSON or a repr) is replaced wherever it appears. That step must come first:
a token may hold ``/``, ``@``, ``:``, ``'`` or anything else, so no scan of
free text can tell for sure where such a token ends. Then a scan for *unknown* URLs: from
each ``scheme://`` to the last ``@`` of that URL (the end of its userinfo) is
replaced, so a partial token git echoes back (it cuts userinfo at the first
``@``) is caught too. The output format is always ``scheme://***@host/...``.
"""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import quote, unquote

_SCHEME_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*")
# Where a URL may begin in free text (the scheme only: the credential is found by parsing).
_SCHEME_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")
# Where a URL in free text ends: git quotes URLs in '...', logs and JSON put blanks or
# quotes around them; none of these may appear unescaped in a URL.
_URL_END = re.compile(r"[\s'\"<>`]")
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*\w+\s+)\S+")
_QUERY_TOKEN = re.compile(r"([?&]token=)[^&\s\"']+")
# What every pattern above needs to match: most text (each access log line) has none of it,
# and one search is cheaper than three substitutions.
_MAY_HOLD_CREDENTIAL = re.compile(r"://|token=|(?i:authorization)")
# A secret this long is replaced wherever it appears, not only inside a URL: shorter
# ones (a user name such as "git") would blank out ordinary words.
_MIN_BARE_SECRET = 8
_HIDDEN = "***"
_HEX_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


class KnownCredentials:
    """The credentials of the URLs this server uses, in every spelling, and what replaces each.

    One per process (behind :func:`remember_url` and :func:`redact`); tests make their own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replacements: dict[str, str] = {}
        # Each replaced text holds one of these: a cheap test before the regex runs
        # (it runs over every log line).
        self._secrets: tuple[str, ...] = ()
        self._pattern: re.Pattern[str] | None = None

    def remember(self, url: str) -> None:
        """Redact this URL's credentials in every spelling, wherever they appear from now on.

        A URL without userinfo (or not a URL) changes nothing. Thread-safe.
        """
        found = _replacements_for(url)
        if found is not None:
            self._add(*found)

    def _add(self, replacements: dict[str, str], secrets: set[str]) -> None:
        canonical = {_canonical(text): by for text, by in replacements.items()}
        with self._lock:
            if canonical.keys() <= self._replacements.keys():
                return
            merged = {**self._replacements, **canonical}
            # Longest first, so that a whole userinfo goes before a piece of it.
            alternatives = sorted(merged, key=len, reverse=True)
            pattern = "|".join(_HEX_ESCAPE.sub(_either_case, re.escape(a)) for a in alternatives)
            # Published in an order that never leaves a pattern without its replacements.
            self._replacements = merged
            self._secrets = tuple(set(self._secrets) | {_canonical(s) for s in secrets})
            self._pattern = re.compile(pattern)

    def redact(self, text: str) -> str:
        """Text with these credentials hidden, then any other URL's, tokens and auth headers."""
        text = self.redact_known(text)  # first: only it knows where an odd token ends
        if not _MAY_HOLD_CREDENTIAL.search(text):
            return text
        text = _redact_urls_in_text(text)
        text = _QUERY_TOKEN.sub(lambda m: m.group(1) + _HIDDEN, text)
        return _AUTH_HEADER.sub(lambda m: m.group(1) + _HIDDEN, text)

    def redact_known(self, text: str) -> str:
        """Text with every spelling of the remembered credentials replaced."""
        pattern = self._pattern
        if pattern is None:
            return text
        seen = _canonical(text) if "%" in text else text
        if not any(secret in seen for secret in self._secrets):
            return text
        replacements = self._replacements
        return pattern.sub(lambda m: replacements.get(_canonical(m.group(0)), _HIDDEN), text)


def _canonical(text: str) -> str:
    """Percent escapes in upper case: %2f and %2F are one character (hex is case-blind)."""
    return _HEX_ESCAPE.sub(lambda m: m.group(0).upper(), text) if "%" in text else text


def _either_case(escape: re.Match[str]) -> str:
    """A regex for one percent escape in any case: %2f -> %2[fF]."""
    return "%" + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in escape[0][1:])


def userinfo_span(url: str) -> tuple[int, int] | None:
    """Where the userinfo of a URL standing alone begins and ends (before its ``@``).

    The userinfo ends at the URL's *last* ``@``: a token may hold ``/`` (base64), so
    the first ``/`` after ``scheme://`` need not be where the host ends, and an ``@``
    in a token makes any earlier ``@`` a false end. A path with an ``@`` in it is then
    hidden along with the host, which errs on the safe side.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not _SCHEME_NAME.fullmatch(scheme):
        return None
    start = len(scheme) + 3
    at = url.rfind("@", start)
    return None if at < 0 else (start, at)


def redact_url(url: str) -> str:
    """One URL (``--repo``) with its userinfo replaced: ``https://***@host/path``.

    Anything that is not a ``scheme://`` URL (a path, scp-style ``git@host:path``)
    comes back as it is.
    """
    span = userinfo_span(url)
    if span is None:
        return url
    start, at = span
    return url[:start] + _HIDDEN + url[at:]


def _spellings(text: str) -> set[str]:
    """How a piece of a URL may be written back: as given, decoded, encoded, JSON-escaped."""
    decoded = unquote(text)
    forms = {text, decoded, quote(decoded, safe=""), quote(decoded, safe=":")}
    for form in list(forms):
        forms.add(json.dumps(form)[1:-1])  # JSON log lines escape quotes and backslashes
        forms.add(json.dumps(form, ensure_ascii=False)[1:-1])
        forms.add(repr(form)[1:-1])  # so does an exception's repr in a message
    return {form for form in forms if form}


def _replacements_for(url: str) -> tuple[dict[str, str], set[str]] | None:
    """What replaces each spelling of the URL's credentials, and the secret's spellings."""
    span = userinfo_span(url)
    if span is None:
        return None
    userinfo = url[span[0] : span[1]]
    # git and curl take the user name up to the first ":"; the rest is the password.
    user, colon, password = userinfo.partition(":")
    secret = password if colon else userinfo
    forms = _spellings(userinfo)
    if colon:
        # Each half encoded on its own, as a user writes it by hand.
        forms |= {u + ":" + p for u in _spellings(user) for p in _spellings(password)}
    long_secret = len(unquote(secret)) >= _MIN_BARE_SECRET
    replacements: dict[str, str] = {}
    for form in forms:
        replacements["://" + form + "@"] = "://" + _HIDDEN + "@"
        if colon or long_secret:
            replacements[form + "@"] = _HIDDEN + "@"  # ssh prints user:pass@host bare
    secrets = _spellings(secret) if secret else set(forms)
    if long_secret:
        for form in _spellings(secret):
            replacements.setdefault(form, _HIDDEN)
    for piece in _pieces(userinfo):
        for form in _spellings(piece):
            replacements.setdefault(form, _HIDDEN)
            secrets.add(form)
    # Every text replaced holds one of the secrets: a spelling of the password (or of the
    # whole userinfo when it has none), or one of the pieces.
    return replacements, secrets


def _pieces(userinfo: str) -> set[str]:
    """What git, curl or ssh print of a userinfo with a raw "/", "?", "#" or "@" in it.

    They take the first of "/?#" for the end of the host (ssh: "Could not resolve
    hostname user:to"), and the first "@" for the end of the userinfo (git prints
    the rest). A piece that starts with "user:" is specific enough to replace at any
    length; a piece of a bare token only when it is long. With no user name, ":" alone
    is no such prefix: ":8" would blank a port (https://:8@x@host:8443).
    """
    cuts = [userinfo[: userinfo.index(c)] for c in "/?#@" if c in userinfo]
    if "@" in userinfo:
        cuts.append(userinfo.partition("@")[2])
    user, colon, _ = userinfo.partition(":")
    return {
        piece
        for piece in cuts
        if (colon and user and piece.startswith(user + ":") and len(piece) > len(user) + 1)
        or len(piece) >= _MIN_BARE_SECRET
    }


def _redact_urls_in_text(text: str) -> str:
    """Each ``scheme://...@`` in the text with what lies between replaced by ``***``.

    A URL runs to the first blank or quote; its userinfo to its last ``@``.
    """
    parts: list[str] = []
    done = 0
    for match in _SCHEME_IN_TEXT.finditer(text):
        start = match.end()
        if match.start() < done:
            continue  # inside the URL just redacted
        end_match = _URL_END.search(text, start)
        end = end_match.start() if end_match else len(text)
        at = text.rfind("@", start, end)
        if at < 0:
            continue
        parts += [text[done:start], _HIDDEN]
        done = at
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


# This process's: taught the --repo URL at startup, used by every log line.
_PROCESS = KnownCredentials()


def remember_url(url: str) -> None:
    """Redact this URL's credentials (given the raw --repo and its normalised form) from now on."""
    _PROCESS.remember(url)


def redact(text: str) -> str:
    """Text with URL credentials, ``token=`` query values and auth headers replaced by ``***``.

    The credentials of remembered URLs go first, in any spelling; then whatever
    lies between ``scheme://`` and the last ``@`` of any other URL.
    """
    return _PROCESS.redact(text)
