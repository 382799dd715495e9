"""The server's one exception tree: every exception the server raises on purpose.

Request errors carry the HTTP status and the stable machine code that one
middleware (``web.middleware``) turns into a JSON error; the rest are
internal: they never reach a client as such, and the docstring of each says
what becomes of it::

    ConfigServerError (500, internal)
    ├── RequestError (400, bad_request)      the request is at fault: 4xx, JSON
    │   ├── MalformedBody (400, malformed_body)
    │   ├── InvalidAppId (400, invalid_app_id)
    │   ├── InvalidParameter (400, invalid_parameter)
    │   ├── BodyTooLarge (413, body_too_large)
    │   ├── BodyTimeout (408, request_timeout)
    │   ├── Unauthorized (401, unauthorized)
    │   ├── Forbidden (403, forbidden)
    │   │   ├── AccessDenied (403, access_denied)
    │   │   └── WebhookDisabled (403, webhook_disabled)
    │   ├── UnknownApp (404, unknown_app)
    │   ├── UnknownCommit (404, unknown_commit)
    │   └── CommitRejected (409, commit_rejected)  with the commit's path:line errors
    ├── NotReady (503, not_ready)            nothing to answer from yet, or sync is down
    ├── Busy (503, busy)                     a bounded resource is full now: retry later
    ├── GitError (500, git_error)            clone/fetch/read failed; URLs redacted
    │   └── MirrorDamaged                    the mirror lacks objects: clone again
    │       └── TreeUnreadable               git could not list a tree or hand over a blob
    ├── SettingsError (startup: exit 2)      bad flags, environment or files
    ├── PinUnreadable                        a pin record that cannot be read: reported, ignored
    └── ContentProblem                       what a person wrote that cannot be taken;
        │                                    the caller reports it in its own terms:
        ├── SourceProblem                    a file a source cannot hand over     (an issue)
        ├── ValueProblem                     a value a field cannot take          (an issue)
        ├── SecretUnreadable                 a secret file not readable as text   (an issue)
        └── AssignmentProblem                a line that is not NAME=VALUE (exit 2 or a 400)

A call made out of order (a bug, never an input) raises ``RuntimeError``.
"""

from __future__ import annotations

from typing import ClassVar


class ConfigServerError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> dict[str, object]:
        """What the JSON error carries beyond status, code and message."""
        return {}


# -- request errors: answered to the client, 4xx --


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


class BodyTimeout(RequestError):
    """A body that did not arrive within --body-timeout (a client too slow, or hostile)."""

    status = 408
    code = "request_timeout"


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"


class Forbidden(RequestError):
    status = 403
    code = "forbidden"


class AccessDenied(Forbidden):
    """A worker that does not meet an app's ``access`` conditions."""

    code = "access_denied"


class WebhookDisabled(Forbidden):
    code = "webhook_disabled"


class UnknownApp(RequestError):
    status = 404
    code = "unknown_app"


class UnknownCommit(RequestError):
    """A commit id that the server's mirror does not hold (or that is ambiguous)."""

    status = 404
    code = "unknown_commit"


class CommitRejected(RequestError):
    """A commit asked for by name (``/admin/pin``) that does not validate now (409)."""

    status = 409
    code = "commit_rejected"

    def __init__(self, message: str, errors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors

    def details(self) -> dict[str, object]:
        return {"errors": list(self.errors)}

    def __reduce__(self) -> tuple[type[CommitRejected], tuple[str, tuple[str, ...]]]:
        # Relayed from the leader to a follower (pickled): keep the errors.
        return (type(self), (self.message, self.errors))


# -- the server's own state --


class NotReady(ConfigServerError):
    """No validated commit is served yet, or the sync task is not running (503)."""

    status = 503
    code = "not_ready"


class Busy(ConfigServerError):
    """A bounded resource (bytes of webhook bodies being read) is full: retry later (503)."""

    status = 503
    code = "busy"


class GitError(ConfigServerError):
    """A git operation failed; the sync records it and retries with backoff."""

    code = "git_error"


class MirrorDamaged(GitError):
    """Objects the mirror should hold are missing or unreadable (e.g. killed mid-fetch):
    the sync discards the mirror and clones again."""


class TreeUnreadable(MirrorDamaged):
    """git could not list a tree or hand over a blob of a commit in the mirror."""


class SettingsError(ConfigServerError):
    """Bad flags, environment or files at startup: the command exits with status 2."""

    code = "bad_settings"


class PinUnreadable(ConfigServerError):
    """A stored emergency pin that cannot be read: logged and shown, then ignored."""

    code = "pin_unreadable"


# -- problems of a commit's content: reported, never raised to a caller --


class ContentProblem(ConfigServerError):
    """A problem of one file, value or line; the caller turns it into an issue or an error."""

    code = "content_problem"


class SourceProblem(ContentProblem):
    """A file that a source cannot hand over: missing, a symbolic link, a directory."""


class ValueProblem(ContentProblem):
    """A value that the field cannot take; the message says why and how to fix it."""


class SecretUnreadable(ContentProblem):
    """A secret file exists but cannot be read as text (its bytes are never quoted)."""


class AssignmentProblem(ContentProblem):
    """A line that is not ``NAME=VALUE``; ``line`` is what was given."""

    def __init__(self, line: str) -> None:
        super().__init__(f"expected NAME=VALUE, got {line!r}")
        self.line = line
