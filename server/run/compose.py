"""The composition root: every shared collaborator of one process, built once, from the settings.

This is the only place below the command line that reads :class:`Settings`
for the layers under ``sync``: each part is handed the small value it needs
(a path, limits, a secret), never the settings themselves. It builds the
parts; ``app`` wires them into the aiohttp app and its ``cleanup_ctx``.

In the leader, the sync thread is the :class:`Syncer`'s; in a follower it is
the thread its :class:`LeaderFollower` builds the leader's commits on. Both
processes have a view thread for history and past commits.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from pathlib import Path

from ..base.clock import Moment
from ..base.errors import SettingsError
from ..base.redact import redact_url, remember_url
from ..base.reloading import Current
from ..base.secret_file import read_secret_file
from ..base.tasks import OneThread, Precedence
from ..config.loader import RepoLimits
from ..config.parse_memo import ParseMemo
from ..config.policy import load_policy
from ..config.schema import bundled_schema
from ..git.credentials import GitCredentials, existing_file
from ..git.data_dir import DataDir, DataDirLock, LastGoodRecord
from ..git.mirror import GitMirror, MirrorReader
from ..git.pin_store import PinFile
from ..git.signatures import SignaturePolicy
from ..ops.fleet import FleetTable
from ..ops.metrics import ConnectionCounts, Metrics, StateCollector
from ..ops.metrics_env import metrics_dir_in_use
from ..ops.status import RepoDescription
from ..processes.follower import LeaderFollower, RelayedShared
from ..processes.role import ProcessRole
from ..settings import Settings
from ..shared.collector import SharedCollector
from ..shared.replicas import SharedState
from ..shared.target import RedisTarget, fleet_namespace, replica_name
from ..shared.view import SharedView
from ..sync.builder import SnapshotBuilder
from ..sync.control import SyncControl
from ..sync.file_watch import FileWatch
from ..sync.secrets import SecretSource
from ..sync.state import SnapshotHolder, SyncTrigger
from ..sync.syncer import PollSchedule, Syncer
from ..sync.viewer import CommitViewer
from ..web.auth import AuthPolicy
from ..web.request_body import BodyLimits
from ..web.webhooks import WebhookReceiver
from .credentials import credential_files


def repo_limits(settings: Settings) -> RepoLimits:
    return RepoLimits(
        max_file_bytes=settings.max_yaml_file_bytes,
        max_files=settings.max_repo_files,
        max_total_bytes=settings.max_repo_bytes,
        max_rules_per_app=settings.max_rules_per_app,
    )


def body_limits(settings: Settings) -> BodyLimits:
    return BodyLimits(max_env_vars=settings.max_env_vars, max_json_depth=settings.max_json_depth)


def git_credentials(settings: Settings, token: str | None) -> GitCredentials:
    """``token``: the https token as loaded now (run.credentials reloads its file)."""
    return GitCredentials(
        https_username=settings.git_username,
        https_token=token,
        ssh_key=existing_file(settings.ssh_key, "--ssh-key") if settings.ssh_key else None,
        ssh_known_hosts=(
            existing_file(settings.ssh_known_hosts, "--ssh-known-hosts")
            if settings.ssh_known_hosts
            else None
        ),
    )


def redis_target(settings: Settings, remote_for_display: str) -> RedisTarget | None:
    """Where the replicas meet (--redis); None when this replica runs alone."""
    if not settings.redis:
        return None
    remember_url(settings.redis)  # its password is redacted from every log line from now on
    password = None
    if settings.redis_password_file:
        password = read_secret_file(settings.redis_password_file, "--redis-password-file")
    return RedisTarget(
        url=settings.redis,
        password=password,
        ca_file=settings.redis_ca_file or None,
        shown_url=redact_url(settings.redis),
        replica=replica_name(
            settings.replica_name, os.environ, socket.gethostname(), settings.port
        ),
        namespace=fleet_namespace(remote_for_display, settings.ref, settings.path),
        interval=settings.redis_interval,
        fleet_ttl=settings.fleet_ttl,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeaderParts:
    """What only the leader has: the data dir lock, the sync loop, the signature check."""

    lock: DataDirLock
    syncer: Syncer
    signatures: SignaturePolicy | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Parts:
    """Every shared collaborator of one process."""

    settings: Settings
    started: Moment
    holder: SnapshotHolder
    sync: SyncControl
    leader: LeaderParts | None  # None in a follower
    follower: LeaderFollower | None  # None in the leader
    viewer: CommitViewer
    sync_thread: OneThread
    view_thread: OneThread
    fleet: FleetTable
    metrics: Metrics
    auth: Current[AuthPolicy]  # --auth-file, reloaded when it changes
    webhooks: WebhookReceiver
    credential_files: FileWatch  # what this process reloads (run.credentials)
    repo: RepoDescription
    body_limits: BodyLimits
    metrics_dir: Path | None  # the multiprocess metrics of --workers N
    connections: ConnectionCounts  # what the connection guards saw (web.connections)
    shared: SharedState | None = None  # --redis, in the leader only: it talks to Redis
    # --redis: what pages read of the shared state (the leader's own, or relayed to a follower).
    shared_view: SharedView | None = None


def compose(
    settings: Settings, role: ProcessRole, *, on_leader_gone: Callable[[], None] | None = None
) -> Parts:
    """Build every part of one process; SettingsError for settings that cannot work.

    ``on_leader_gone``: how a follower process begins its shutdown when its leader goes.
    """
    # Files named by the settings first: a bad one is the error an operator sees.
    files = credential_files(settings, leader=role.leader_link is None)
    webhooks = WebhookReceiver(files.webhook_secret, settings.ref)
    data_dir = DataDir(root=Path(settings.data_dir))
    credentials = git_credentials(settings, files.git_token.value)
    mirror = GitMirror(
        remote=settings.repo,
        path=data_dir.mirror,
        ref=settings.ref,
        timeout=settings.git_timeout,
        depth=settings.depth,
        credentials=credentials,
    )
    limits = repo_limits(settings)
    holder = SnapshotHolder(live=role.live)
    fleet = FleetTable(
        capacity=settings.fleet_size, env_allow_list=settings.fleet_env, ttl=settings.fleet_ttl
    )
    sync_thread = OneThread("git-sync")
    view_thread = OneThread("git-view")
    # Builds (sync thread) go first; history walks and past-commit views step aside.
    precedence = Precedence()
    leader: LeaderParts | None = None
    follower: LeaderFollower | None = None
    sync: SyncControl
    is_leader = role.leader_link is None
    # The leader checks signatures before it serves a commit; its followers need not.
    signatures = (
        SignaturePolicy(
            gnupg_home=data_dir.gnupg,
            gpg_keys=settings.trusted_gpg_keys,
            allowed_signers=settings.allowed_signers,
        )
        if settings.require_signed_commits and is_leader
        else None
    )
    builder = SnapshotBuilder(
        mirror=mirror,
        # Blobs and parsed files of the last commit, so the next one reuses them.
        reader=MirrorReader(mirror, parse_memo=ParseMemo()),
        subdir=settings.path,
        limits=limits,
        secrets=SecretSource(settings.secrets_dir),
        signatures=signatures,
        policy=load_policy(settings.key_policy, bundled_schema().fields),
        scopes=files.scopes,  # None in a follower: its leader checked them
        lmcache_versions=settings.lmcache_versions,
        precedence=precedence,
    )
    if role.leader_link is None:
        syncer = Syncer(
            mirror=mirror,
            builder=builder,
            holder=holder,
            last_good=LastGoodRecord(
                data_dir.state,
                remote=mirror.remote_for_display,
                identity=mirror.identity,
                ref=settings.ref,
            ),
            sync_thread=sync_thread,
            schedule=PollSchedule(
                interval=settings.poll_interval, max_backoff=settings.max_backoff
            ),
            # The emergency pin, kept in the data dir; with --redis also shared by every
            # replica (server.shared), which its answers say.
            pins=PinFile(
                data_dir.pin,
                identity=mirror.identity,
                ref=settings.ref,
                scope="every replica (shared through Redis)" if settings.redis else "this replica",
            ),
        )
        syncer.apps_in_use = fleet.apps_in_use
        # A rotated secret (or changed scopes) reaches workers now, not at the next poll.
        files.on_secrets_change.append(lambda: syncer.request_sync(SyncTrigger.SECRETS))

        def use_git_token(token: str | None) -> None:
            mirror.use_credentials(dataclasses.replace(credentials, https_token=token))
            syncer.request_sync(SyncTrigger.CREDENTIALS)

        files.on_git_token_change.append(use_git_token)
        leader = LeaderParts(lock=DataDirLock(data_dir.lock), syncer=syncer, signatures=signatures)
        sync = syncer
    else:
        if on_leader_gone is None:
            raise SettingsError("a follower process needs to know how to stop")
        follower = LeaderFollower(
            builder=builder,
            holder=holder,
            build_thread=sync_thread,
            link=role.leader_link,
            fleet=fleet,
            on_leader_gone=on_leader_gone,
        )
        sync = follower
    started = Moment.now()
    # --redis: every process names its sightings; only the leader talks to Redis.
    target = redis_target(settings, mirror.remote_for_display)
    fleet.replica = target.replica if target is not None else None
    shared = None
    shared_view: SharedView | None = None
    if target is not None and leader is not None:
        shared = shared_view = SharedState(
            target=target,
            syncer=leader.syncer,
            fleet=fleet,
            started=started,
            stale_after=settings.stale_after,
        )
    elif target is not None and follower is not None:
        shared_view = RelayedShared(follower)
    metrics_dir = metrics_dir_in_use() if settings.workers > 1 else None
    metrics = Metrics(
        str(metrics_dir) if metrics_dir is not None else None,
        # A follower reports its leader's process_* (its parent: spawned by the pool).
        leader_pid=None if is_leader else os.getppid(),
    )
    if leader is not None:
        leader.syncer.recorded.append(metrics.observe_sync)
    connections = ConnectionCounts()
    if shared is not None:
        metrics.registry.register(SharedCollector(shared))
    metrics.registry.register(
        StateCollector(
            holder=holder,
            syncer=sync,
            fleet=fleet,
            started=started,
            stale_after=settings.stale_after,
            ref=settings.ref,
            connections=connections,
        )
    )
    return Parts(
        settings=settings,
        started=started,
        holder=holder,
        sync=sync,
        leader=leader,
        follower=follower,
        viewer=CommitViewer(
            mirror=mirror,
            view_thread=view_thread,
            subdir=settings.path,
            limits=limits,
            lmcache_versions=settings.lmcache_versions,
            precedence=precedence,
        ),
        sync_thread=sync_thread,
        view_thread=view_thread,
        fleet=fleet,
        metrics=metrics,
        auth=files.auth,
        webhooks=webhooks,
        credential_files=files.watch,
        repo=RepoDescription(
            remote=mirror.remote_for_display,
            ref=settings.ref,
            path=settings.path,
            credentials=credentials.describe(),
        ),
        body_limits=body_limits(settings),
        metrics_dir=metrics_dir,
        connections=connections,
        shared=shared,
        shared_view=shared_view,
    )
