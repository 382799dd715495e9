"""The server's one exception hierarchy.

Every error a request can meet carries its HTTP status and a stable machine
code; one middleware (``front_door.front_door``) turns them into JSON::

    ConfigServerError (500, internal)
    ├── RequestError (400, bad_request)
    │   ├── MalformedBody (400, malformed_body)
    │   ├── InvalidAppId (400, invalid_app_id)
    │   ├── InvalidParameter (400, invalid_parameter)
    │   └── BodyTooLarge (413, body_too_large)
    ├── Unauthorized (401, unauthorized)
    ├── Forbidden (403, forbidden)
    │   ├── AccessDenied (403, access_denied)
    │   └── WebhookDisabled (403, webhook_disabled)
    ├── UnknownApp (404, unknown_app)
    ├── NotReady (503, not_ready)
    ├── SettingsError (startup only: bad flags or environment)
    ├── GitError (500, git_error: clone/fetch/read failures, URLs redacted)
    └── CommitRejected (sync only: a commit that failed validation)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .config_issues import ConfigIssue


class ConfigServerError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RequestError(ConfigServerError):
    status = 400
    code = "bad_request"


class MalformedBody(RequestError):
    code = "malformed_body"


class InvalidAppId(RequestError):
    code = "invalid_app_id"


class InvalidParameter(RequestError):
    code = "invalid_parameter"


class BodyTooLarge(RequestError):
    status = 413
    code = "body_too_large"


class Unauthorized(ConfigServerError):
    status = 401
    code = "unauthorized"


class Forbidden(ConfigServerError):
    status = 403
    code = "forbidden"


class AccessDenied(Forbidden):
    """A worker that does not meet an app's ``access`` conditions."""

    code = "access_denied"


class WebhookDisabled(Forbidden):
    code = "webhook_disabled"


class UnknownApp(ConfigServerError):
    status = 404
    code = "unknown_app"


class NotReady(ConfigServerError):
    status = 503
    code = "not_ready"


class SettingsError(ConfigServerError):
    code = "bad_settings"


class GitError(ConfigServerError):
    code = "git_error"


class CommitRejected(ConfigServerError):
    """A commit whose config failed validation; ``issues`` lists every problem found."""

    code = "commit_rejected"

    def __init__(self, commit: str, issues: tuple[ConfigIssue, ...]) -> None:
        super().__init__(f"commit {commit[:12]} rejected: {len(issues)} problem(s)")
        self.commit = commit
        self.issues = issues
