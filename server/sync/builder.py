"""One commit of the mirror into a snapshot to serve, or into a rejection that says why.

The stages, in order, each of which can end the build with a :class:`Rejection`:

1. **verify**: with ``--require-signed-commits``, a good signature by a trusted key;
2. **load**: the config set read from the commit's tree and validated (``config.loader``);
3. **guard**: the key policy and LMCache's own validation of each app's
   effective config (``config.guardrails``), then the secret scopes;
4. **resolve**: every ``${secret:NAME}`` the config set refers to, from this server;
5. **snapshot**: the answers built once (``config.snapshot``).

A rejection for a secret (its scope in stage 3, its value in stage 4) is a
server-side one (``RejectionKind.SERVER_SIDE``): defining or scoping the secret
must be enough to serve the commit, so it is retried.
Blocking: a builder runs on one thread (the sync thread, or a follower's),
because its reader keeps caches from one commit to the next.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

from ..base.collector import collector_kept_off
from ..base.issues import ConfigIssue
from ..base.reloading import Current
from ..base.tasks import Precedence
from ..config.engine_check import engine_check
from ..config.guardrails import EngineMemo, Guardrails, SecretScopes, vanished_apps
from ..config.loader import RepoLimits
from ..config.policy import BUILT_IN_POLICY, KeyPolicy
from ..config.schema import Schema, load_schema
from ..config.snapshot import CommitInfo, ConfigsMemo, Snapshot
from ..git.mirror import GitMirror, MirrorReader
from ..git.signatures import SignaturePolicy
from .secrets import SecretLookup, SecretSource, resolve_secrets
from .state import Rejection, RejectionKind


class SnapshotBuilder:
    def __init__(
        self,
        *,
        mirror: GitMirror,
        reader: MirrorReader,
        subdir: str,
        limits: RepoLimits,
        secrets: SecretSource,
        signatures: SignaturePolicy | None = None,
        policy: KeyPolicy = BUILT_IN_POLICY,
        scopes: SecretScopes | Current[SecretScopes] | None = None,
        lmcache_versions: tuple[str, ...] = (),
        precedence: Precedence | None = None,
    ) -> None:
        """``precedence``: each build runs as work that serves, which views step aside for."""
        self._mirror = mirror
        self._precedence = precedence or Precedence()
        # --lmcache-versions: checked on top of each commit's own lmcache_versions.
        self._lmcache_versions = lmcache_versions
        self._reader = reader
        self._subdir = subdir
        self._limits = limits
        self._secrets = secrets
        self._signatures = signatures
        self._schema: Schema | None = None
        # --secret-scopes is read again when it changes: each build takes the scopes in force.
        self._scopes = scopes if isinstance(scopes, Current) else None
        fixed = None if isinstance(scopes, Current) else scopes
        self._guardrails = Guardrails(policy=policy, engine=None, scopes=fixed)
        self._engine_memo = EngineMemo()
        self._configs_memo = ConfigsMemo()
        self._built_once = False  # the first build parses every file (``base.collector``)

    def prepare(self) -> Schema:
        """Load the LMCache schema (importing lmcache takes a while: not on the event loop)."""
        self._schema = load_schema(versions=self._lmcache_versions)
        engine = engine_check()
        self._guardrails = dataclasses.replace(self._guardrails, engine=engine)
        return self._schema

    @property
    def schema(self) -> Schema:
        if self._schema is None:
            raise RuntimeError("SnapshotBuilder.prepare() has not run")
        return self._schema

    def build(
        self,
        sha: str,
        secrets: SecretLookup | None = None,
        in_use: Mapping[str, int] | None = None,
    ) -> Snapshot | Rejection:
        """The snapshot of ``sha``, or its rejection; MirrorDamaged when it cannot be read.

        ``secrets``: where to look them up instead of this server's own source (a follower
        process builds with the secrets the leader resolved). ``in_use``: workers per served
        app that asked within --fleet-ttl; removing such an app's file needs the commit to
        say so (``Removes-Apps:``).
        """
        # The served snapshot is not the cycle collector's to walk, again and again, while
        # its successor is built; nor, in a cold build, the files parsed so far.
        first_build, self._built_once = not self._built_once, True
        with (
            self._precedence.serving(),
            collector_kept_off(first_build=first_build) as between_files,
        ):
            return self._build(sha, secrets, in_use, between_files)

    def _build(
        self,
        sha: str,
        secrets: SecretLookup | None,
        in_use: Mapping[str, int] | None,
        between_files: Callable[[], None],
    ) -> Snapshot | Rejection:
        refusal = self._verify(sha)
        if refusal is not None:
            return refusal
        info, config_set, issues = self._reader.load_commit(
            sha, self._subdir, self.schema, self._limits, between_files=between_files
        )
        if config_set is None:
            return _rejection(info, issues, RejectionKind.CONTENT)
        refused = self._guardrails.content_issues(config_set, self._engine_memo)
        if in_use:
            refused += vanished_apps(config_set, in_use, info.removes_apps)
        if refused:
            return _rejection(info, refused, RejectionKind.CONTENT)
        unscoped = self._guardrails_now().scope_issues(config_set)
        if unscoped:
            return _rejection(info, unscoped, RejectionKind.SERVER_SIDE)
        secret_values, secret_issues = resolve_secrets(config_set, secrets or self._secrets)
        if secret_issues:
            return _rejection(info, [*issues, *secret_issues], RejectionKind.SERVER_SIDE)
        return Snapshot(
            commit=info,
            config_set=config_set,
            loaded_at=time.time(),
            schema_source=self.schema.with_versions(config_set.lmcache_versions).source,
            secrets=secret_values,
            configs_memo=self._configs_memo,
        )

    def _guardrails_now(self) -> Guardrails:
        """The guardrails with the secret scopes in force now (read once per build)."""
        if self._scopes is not None:
            scopes = self._scopes.value
            if scopes is not self._guardrails.scopes:
                self._guardrails = dataclasses.replace(self._guardrails, scopes=scopes)
        return self._guardrails

    def _verify(self, sha: str) -> Rejection | None:
        if self._signatures is None:
            return None
        refusal = self._signatures.check(self._mirror.path, sha)
        if refusal is None:
            return None
        issue = ConfigIssue(path=".", line=1, column=1, message=refusal)
        return _rejection(self._mirror.commit_info(sha), [issue], RejectionKind.CONTENT)

    def secrets_changed(self, snapshot: Snapshot | None) -> bool:
        """Whether the served snapshot's secrets resolve differently now (a rotation)."""
        if snapshot is None or not snapshot.secret_names:
            return False
        if self._scopes is not None and self._scopes.value is not self._guardrails.scopes:
            return True  # --secret-scopes changed since the last build: check the commit again
        resolved, issues = self._secrets.resolve(snapshot.config_set)
        return bool(issues) or resolved != snapshot.resolved_secrets()


def _rejection(info: CommitInfo, issues: list[ConfigIssue], kind: RejectionKind) -> Rejection:
    return Rejection(commit=info, issues=tuple(sorted(issues)), rejected_at=time.time(), kind=kind)
