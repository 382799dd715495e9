"""Push webhooks from GitHub, GitLab and Gitea: verify, then ask for a sync at once.

Every request must prove it knows the shared secret before its body is even
parsed: GitHub sends an HMAC-SHA256 of the body in ``X-Hub-Signature-256``,
Gitea in ``X-Gitea-Signature``, GitLab sends the secret itself in
``X-Gitlab-Token``. Without a configured secret every webhook is refused:
an unauthenticated endpoint that makes the server fetch is an invitation to
abuse. A valid push to the served ref queues a sync and answers 202 at once
(bursts coalesce in the syncer); a push to another ref is acknowledged and
ignored; a delivery id seen before is acknowledged and ignored.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from ..base.errors import BodyTooLarge, Busy, MalformedBody, Unauthorized, WebhookDisabled
from ..base.reloading import Current
from ..settings import env_var_name

log = logging.getLogger("server.webhooks")

# Providers cap push payloads at a few MB (GitHub: 25 MB); config repo pushes are small.
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024
# All webhook bodies being read at once, together: unauthenticated bytes held in memory.
MAX_WEBHOOK_BYTES_IN_FLIGHT = 4 * MAX_WEBHOOK_BYTES
_REMEMBERED_DELIVERIES = 1000

# Header that names the event, by provider; Gitea also sends GitHub's headers, so it
# is recognised first.
_EVENT_HEADERS = (
    ("gitea", "X-Gitea-Event"),
    ("gitlab", "X-Gitlab-Event"),
    ("github", "X-GitHub-Event"),
)
_SIGNATURE_HEADERS = {
    "gitea": "X-Gitea-Signature",
    "gitlab": "X-Gitlab-Token",
    "github": "X-Hub-Signature-256",
}
_DELIVERY_HEADERS = {
    "gitea": "X-Gitea-Delivery",
    "gitlab": "X-Gitlab-Event-UUID",
    "github": "X-GitHub-Delivery",
}
PROVIDERS = tuple(name for name, _ in _EVENT_HEADERS)


def _hmac_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(provider: str, secret: bytes, headers: Any, body: bytes) -> bool:
    if provider == "github":
        given = headers.get("X-Hub-Signature-256", "")
        prefix = "sha256="
        return given.startswith(prefix) and hmac.compare_digest(
            given[len(prefix) :].encode(), _hmac_hex(secret, body).encode()
        )
    if provider == "gitea":
        given = headers.get("X-Gitea-Signature", "")
        return bool(given) and hmac.compare_digest(given.encode(), _hmac_hex(secret, body).encode())
    if provider == "gitlab":
        given = headers.get("X-Gitlab-Token", "")
        return bool(given) and hmac.compare_digest(given.encode(), secret)
    return False


def detect_provider(headers: Any) -> str | None:
    for name, header in _EVENT_HEADERS:
        if header in headers:
            return name
    return None


class WebhookReceiver:
    """Holds the secret, the recently seen delivery ids and the bytes of bodies being read.

    The secret is a cell: ``--webhook-secret-file`` is read again when it changes. A
    delivery reads it once (``check_before_body`` returns it), so a rotation while its
    body is read never checks one delivery against two secrets.
    """

    def __init__(self, secret: Current[bytes | None], served_ref: str) -> None:
        self._secret = secret
        self.served_ref = served_ref
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.bytes_in_flight = 0

    def required_secret(self) -> bytes:
        """The secret in force now; WebhookDisabled (403) while none is set."""
        secret = self._secret.value
        if secret is None:
            raise WebhookDisabled(
                f"webhooks are disabled: set {env_var_name('webhook_secret')} or "
                "--webhook-secret-file, and the same secret in the git host's webhook"
            )
        return secret

    def check_before_body(self, provider: str, headers: Any, content_length: int | None) -> bytes:
        """Everything that can refuse a delivery before one byte of its body is read.

        Webhooks off, no signature header, a GitLab token that is wrong, or a declared
        size over the limit: refused at once, so an unauthenticated sender cannot make
        the server hold its bytes. Returns the secret the delivery is checked against.
        """
        secret = self.required_secret()
        header = _SIGNATURE_HEADERS[provider]
        if not headers.get(header, ""):
            log.warning("webhook (%s) refused: no %s header", provider, header)
            raise Unauthorized(f"missing or invalid {provider} webhook signature")
        if provider == "gitlab" and not signature_valid(provider, secret, headers, b""):
            log.warning("webhook (%s) refused: missing or bad signature", provider)
            raise Unauthorized(f"missing or invalid {provider} webhook signature")
        if content_length is not None and content_length > MAX_WEBHOOK_BYTES:
            raise BodyTooLarge(f"webhook body is larger than {MAX_WEBHOOK_BYTES} bytes")
        return secret

    def wanted_refs(self) -> set[str]:
        if self.served_ref.startswith("refs/"):
            return {self.served_ref}
        return {f"refs/heads/{self.served_ref}", f"refs/tags/{self.served_ref}"}

    def first_delivery(self, delivery_id: str) -> bool:
        """True the first time a delivery id is seen (bounded memory)."""
        if not delivery_id:
            return True
        if delivery_id in self._seen:
            return False
        self._seen[delivery_id] = None
        if len(self._seen) > _REMEMBERED_DELIVERIES:
            self._seen.popitem(last=False)
        return True


async def read_limited(request: web.Request, receiver: WebhookReceiver, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes without buffering them.

    Every byte held counts against the receiver's budget for all bodies being
    read at once; a body that would exceed it is refused with 503 (retry later).
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            receiver.bytes_in_flight += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"webhook body is larger than {limit} bytes")
            if receiver.bytes_in_flight > MAX_WEBHOOK_BYTES_IN_FLIGHT:
                raise Busy("too many webhook bodies are being received at once; retry later")
            chunks.append(chunk)
    finally:
        receiver.bytes_in_flight -= size
    return b"".join(chunks)


def check_and_parse(
    secret: bytes, provider: str, headers: Any, body: bytes
) -> tuple[str, dict[str, Any]]:
    """Verify a delivery and return (event name, payload); raise a JSON-mapped error."""
    if not signature_valid(provider, secret, headers, body):
        log.warning("webhook (%s) refused: missing or bad signature", provider)
        raise Unauthorized(f"missing or invalid {provider} webhook signature")
    event = headers.get(dict(_EVENT_HEADERS)[provider], "")
    # Decoded only now: the signature is over the raw bytes, whatever their encoding.
    text = _json_text(headers.get("Content-Type", ""), body)
    try:
        payload = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise MalformedBody(
            f"webhook body is not JSON: {exc}; set the webhook's content type to "
            "application/json (form-encoded payload=... is accepted too)"
        ) from None
    if not isinstance(payload, dict):
        raise MalformedBody("webhook body must be a JSON object")
    return event, payload


_FORM = "application/x-www-form-urlencoded"


def _json_text(content_type: str, body: bytes) -> bytes | str:
    """The JSON of a delivery: the body itself, or the ``payload`` field of a form-encoded
    one (GitHub's default content type, also Gitea's form option)."""
    if content_type.split(";", 1)[0].strip().lower() != _FORM:
        return body
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        fields = {}
    payloads = fields.get("payload", [])
    if len(payloads) != 1:
        raise MalformedBody(
            f"a form-encoded webhook ({_FORM}) must carry one payload=<JSON> field; or set "
            "the webhook's content type to application/json"
        )
    return payloads[0]


def delivery_id(provider: str, headers: Any) -> str:
    return str(headers.get(_DELIVERY_HEADERS[provider], ""))
