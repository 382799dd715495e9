"""Git URL credentials are redacted whatever characters a token holds (``base.redact``).

Each test teaches its own ``KnownCredentials``, so that no planted token leaks
into the process-wide redactor that the other tests' log lines go through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import quote, unquote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from server.base.redact import KnownCredentials, redact, redact_url, userinfo_span

HOST = "git.example.com:8443"
PATH = "org/cfg.git"
# Any printable character but the blank (ASCII, and a few beyond), each of which
# a token written into a URL may hold.
TOKENS = st.text(
    st.one_of(st.characters(min_codepoint=0x21, max_codepoint=0x7E), st.sampled_from("éß€")),
    min_size=8,
    max_size=40,
)
# Tokens of base64's alphabet and the troublemakers: no blanks or quotes, so the
# scan for unknown URLs alone must hide them.
BASE64ISH = st.text(st.sampled_from("ABCxyz019+/=@%:-_"), min_size=8, max_size=40).filter(
    lambda t: any(c in t for c in "/@+%:")
)

# What git (2.39) and this server print about a URL.
TEMPLATES: list[Callable[[str], str]] = [
    lambda u: f"fatal: unable to access '{u}/': URL using bad/illegal format or missing URL",
    lambda u: f"fatal: repository '{u}/' not found",
    lambda u: f"fatal: Authentication failed for '{u}/'",
    lambda u: f"fetch from {u} failed: exit code 128",
    lambda u: f"GitError({u!r})",
    lambda u: json.dumps({"message": f"fetch from {u} failed", "repo": u}),
    lambda u: json.dumps({"message": f"fetch from {u} failed"}, ensure_ascii=False),
]


def _known(*urls: str) -> KnownCredentials:
    known = KnownCredentials()
    for url in urls:
        known.remember(url)
    return known


def _forms(token: str) -> set[str]:
    return {token, quote(token, safe=""), unquote(token)}


def _hidden(token: str, text: str) -> bool:
    return all(form not in text for form in _forms(token))


def test_output_format_is_unchanged() -> None:
    assert redact_url("https://user:pw@host/x") == "https://***@host/x"
    assert redact_url("https://TOKEN@host/x") == "https://***@host/x"
    assert redact_url("ssh://user:pass@host:22/x.git") == "ssh://***@host:22/x.git"
    assert redact_url("HTTPS://u:p@host") == "HTTPS://***@host"
    assert redact_url("https://host/x.git") == "https://host/x.git"
    assert redact_url("git@github.com:org/repo.git") == "git@github.com:org/repo.git"
    assert redact_url("/srv/config repo") == "/srv/config repo"


@pytest.mark.parametrize(
    ("url", "userinfo"),
    [
        ("https://user:to/k@n@host/repo", "user:to/k@n"),
        ("https://to/k@n@host/repo", "to/k@n"),
        ("https://u:a%2Fb%40c@host:8443/org/repo.git", "u:a%2Fb%40c"),
        ("https://u:a+b:c@host/", "u:a+b:c"),
        ("ssh://git@host/x", "git"),
        ("https://host/x", None),
        ("not a url@host", None),
    ],
)
def test_userinfo_ends_at_the_last_at(url: str, userinfo: str | None) -> None:
    span = userinfo_span(url)
    assert (url[span[0] : span[1]] if span else None) == userinfo


def test_what_git_prints_for_raw_tokens_is_hidden_even_unknown() -> None:
    # git 2.39, for http://user:to/k@n@127.0.0.1:9/repo.git and http://user:to@k+n:x@...
    # (the second: git drops the userinfo up to the first "@" and prints the rest).
    assert redact(
        "fatal: unable to access 'http://user:to/k@n@127.0.0.1:9/repo.git/': URL using bad"
    ) == ("fatal: unable to access 'http://***@127.0.0.1:9/repo.git/': URL using bad")
    assert redact("fatal: unable to access 'http://k+n:x@127.0.0.1:9/repo.git/': bad") == (
        "fatal: unable to access 'http://***@127.0.0.1:9/repo.git/': bad"
    )
    assert redact("see https://a@b@host/x and ssh://u:p@h/y.") == (
        "see https://***@host/x and ssh://***@h/y."
    )
    assert redact("url=x_https://u:p@h/y") == "url=x_https://***@h/y"


def test_text_without_credentials_is_unchanged() -> None:
    known = _known("https://deploy:s3cr3t/t0ken@host/x.git", "ssh://git@host/y.git")
    for text in [
        "fatal: repository 'http://127.0.0.1:9/repo.git/' not found",
        "git@github.com:org/repo.git and git fetch origin",
        "GET /config?appId=a 200 user=deploy",
        "a 100% safe line",
    ]:
        assert known.redact(text) == text


def test_a_short_user_name_is_not_blanked_everywhere() -> None:
    known = _known("ssh://git@host/y.git")
    assert known.redact("git fetch ssh://git@host/y.git") == "git fetch ssh://***@host/y.git"


def test_ssh_prints_user_and_password_without_a_scheme() -> None:
    known = _known("ssh://deploy:pa/ss@host/y.git")
    assert known.redact("deploy:pa/ss@host: Permission denied") == "***@host: Permission denied"


def test_the_pieces_git_and_ssh_cut_a_raw_token_into() -> None:
    known = _known("ssh://deploy:pl4nt/x@y+z:w0rd0long@127.0.0.1:22/cfg.git")
    # ssh takes the first "/" for the end of the host; git the first "@" for the userinfo's.
    assert known.redact("ssh: Could not resolve hostname deploy:pl4nt: unknown") == (
        "ssh: Could not resolve hostname ***: unknown"
    )
    assert known.redact("git said y+z:w0rd0long@127.0.0.1") == "git said ***@127.0.0.1"
    short = _known("https://deploy:pl4nt/x@y+z@127.0.0.1/cfg.git")
    assert short.redact("git said y+z.") == "git said y+z."  # too short to go bare...
    assert short.redact("at 'https://y+z@127.0.0.1/cfg.git/'") == (
        "at 'https://***@127.0.0.1/cfg.git/'"  # ...but never shown in a URL
    )


def test_percent_escapes_in_any_case() -> None:
    known = _known("https://deploy:a%2Fb%40c%2Bd%25e%3Afg@host/x.git")
    for spelled in ["a%2fb%40c%2bd%25e%3afg", "a%2Fb%40c%2bd%25e%3Afg"]:
        assert known.redact(f"deploy:{spelled}@host") == "***@host"
        assert known.redact(f"token {spelled} here") == "token *** here"
    assert known.redact("decoded a/b@c+d%e:fg too") == "decoded *** too"


@given(token=TOKENS)
def test_known_tokens_never_shown(token: str) -> None:
    # Nothing of the token in the text around the URL, nor in its host and path.
    assume(
        not any(
            form in template("") + HOST + PATH for template in TEMPLATES for form in _forms(token)
        )
    )
    encoded = f"https://deploy:{quote(token, safe='')}@{HOST}/{PATH}"
    raw = f"https://deploy:{token}@{HOST}/{PATH}"
    token_only = f"https://{token}@{HOST}/{PATH}"
    known = _known(encoded, raw, token_only)
    for url in (encoded, raw, token_only):
        for template in TEMPLATES:
            shown = known.redact(template(url))
            assert _hidden(token, shown), (template(url), shown)
            assert HOST in shown
            assert PATH in shown
        assert known.redact(url) == f"https://***@{HOST}/{PATH}"


@given(token=BASE64ISH)
def test_unknown_tokens_never_shown_in_what_git_prints(token: str) -> None:
    # Not remembered: the scan alone finds where each of these URLs' userinfo ends.
    for url in (
        f"https://deploy:{quote(token, safe='')}@{HOST}/{PATH}",
        f"https://deploy:{token}@{HOST}/{PATH}",
        f"https://{token}@{HOST}/{PATH}",
    ):
        shown_url = f"https://***@{HOST}/{PATH}"
        assert redact_url(url) == shown_url
        for template in TEMPLATES:
            assert redact(template(url)) == template(shown_url)
        # What git prints of a URL it has cut at the first "@": the rest hidden too.
        rest = url.partition("://")[2].partition("@")[2]
        if "@" in rest:
            assert redact(f"fatal: unable to access 'https://{rest}/': bad") == (
                f"fatal: unable to access '{shown_url}/': bad"
            )


@given(token=TOKENS, user=st.sampled_from(["deploy", "x-token-auth", "oauth2", "u"]))
def test_every_spelling_of_a_remembered_url(token: str, user: str) -> None:
    assume(not any(form in f"{user}:@{HOST} bare in a message" for form in _forms(token)))
    encoded = quote(token, safe="")
    known = _known(f"https://{user}:{encoded}@{HOST}/{PATH}")
    decoded_url = f"https://{user}:{unquote(encoded)}@{HOST}/{PATH}"
    lower_hex = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)
    for text in (
        decoded_url,
        json.dumps(decoded_url),
        json.dumps(decoded_url, ensure_ascii=False),
        repr(decoded_url),
        f"{user}:{token}@{HOST}",
        f"{user}:{lower_hex}@{HOST}",
        f"bare {token} in a message",
        f"bare {encoded} in a message",
    ):
        shown = known.redact(text)
        assert _hidden(token, shown), (text, shown)
        assert lower_hex not in shown, (text, shown)


def test_many_remembered_urls_keep_each_other_whole() -> None:
    known = _known(
        "https://deploy:abc/def@ghijk@host/a.git", "https://deploy:abc/def@ghijk+more@host/a.git"
    )
    assert known.redact("x https://deploy:abc/def@ghijk+more@host/a.git y") == (
        "x https://***@host/a.git y"
    )
    assert known.redact("'https://deploy:abc/def@ghijk@host/a.git/'") == "'https://***@host/a.git/'"


def test_a_piece_of_a_token_without_a_user_name_never_blanks_a_port() -> None:
    # Found by hypothesis: git cuts ":8@Cy=}P" at its "@", and ":8" is in ":8443".
    token = ":8@Cy=}P"
    known = _known(f"https://{token}@{HOST}/{PATH}")
    shown = known.redact(f"fatal: unable to access 'https://{token}@{HOST}/{PATH}/': bad URL")
    assert shown == f"fatal: unable to access 'https://***@{HOST}/{PATH}/': bad URL"
