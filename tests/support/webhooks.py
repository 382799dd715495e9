"""Webhook deliveries as a forge sends them: a push body and GitHub's signed headers."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

SECRET = "webhook-secret-for-tests"


def github_headers(body: bytes, *, event: str = "push", secret: str = SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={signature}",
        "Content-Type": "application/json",
    }


def push_body(ref: str = "refs/heads/main") -> bytes:
    return json.dumps({"ref": ref, "after": "0" * 40, "repository": {"name": "cfg"}}).encode()
