"""``validate``, ``render`` and ``diff``: the server's own loader, for config authors and CI.

Secrets (``${secret:NAME}``) are never resolved here: the tools show the
reference as written. ``validate`` and ``render`` apply the server's
guardrails (``config.guardrails``): the key policy (``--key-policy``, as
``serve``), LMCache's own validation, and, given the server's secrets
configuration (``--secrets-dir`` or ``--secret-names``, ``--secret-scopes``),
whether every secret is defined and scoped. What only the server can know is
named in the output, never passed over in silence.

Each command loads config sets exactly as the server does (a commit through
``git.commits`` or a directory, into ``config.loader.load_config_set``) and
answers exactly as it does (``config.snapshot.Snapshot``), so what these
commands say is what workers get.
Exit codes: 0 fine, 1 the config is invalid, 2 a usage error (bad flag, path
or revision).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

import git
from git import Repo

from ..base.assignments import parse_assignments
from ..base.errors import AccessDenied, AssignmentProblem, InvalidAppId, SettingsError
from ..base.issues import ConfigIssue, ConfigWarning
from ..config.effective import EffectiveSetting
from ..config.engine_check import BundledRules, EngineCheck, engine_check
from ..config.explain import rule_outcomes
from ..config.guardrails import Guardrails
from ..config.hints import app_file
from ..config.loader import load_directory
from ..config.model import ConfigSet
from ..config.names import check_app_id, display_prefix, subdir_problem
from ..config.policy import load_policy
from ..config.schema import Schema, SchemaChoice
from ..config.snapshot import CommitInfo, Snapshot
from ..config.views import diff_config_sets, diff_markdown
from ..git.commits import load_commit
from ..sync.secrets import SecretSource, load_secret_scopes
from .editor_schema import stale_schemas

EXIT_OK = 0
EXIT_INVALID = 1
WORKING_TREE = "working-tree"


def add_commands(commands: Any) -> None:
    """Add the three authoring subcommands to the CLI's subparsers."""
    validate = commands.add_parser(
        "validate",
        help="check a config repository with the server's own validation",
        description=(
            "Validate the config set in PATH (a working tree: what is on disk) or, with --ref, "
            "in a commit of the repository containing PATH. One error per line: "
            "path:line:col: error: message. Exit 0 valid, 1 invalid, 2 usage error."
        ),
    )
    validate.add_argument("path", nargs="?", default=".", metavar="PATH", help="config root")
    validate.add_argument("--ref", metavar="REV", help="validate this commit instead of disk")
    _server_flags(validate)
    _format_flag(validate)

    render = commands.add_parser(
        "render",
        help="print the answer a worker would get, and where each value comes from",
        description=(
            "Print the /config answer for APP_ID and a worker with the given environment and "
            "current config, from the working tree or, with --ref, from a commit. "
            "--format json prints the answer bytes exactly as the server sends them."
        ),
    )
    render.add_argument("app_id", metavar="APP_ID")
    _repo_flags(render)
    render.add_argument("--ref", metavar="REV", help="render this commit instead of disk")
    render.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the worker (repeatable)",
    )
    render.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a current_config field of the worker, VALUE read as YAML (repeatable)",
    )
    _server_flags(render)
    _format_flag(render)

    diff = commands.add_parser(
        "diff",
        help="effective per-app changes between two commits (a PR comment in markdown)",
        description=(
            "For every app (or --app), what changes between REV_A and REV_B: keys added, "
            "removed or changed, override flips, and rules added, removed or changed. "
            "Typical call in a pull request: diff origin/main HEAD."
        ),
    )
    diff.add_argument("rev_a", metavar="REV_A")
    diff.add_argument("rev_b", metavar="REV_B")
    _repo_flags(diff)
    diff.add_argument("--app", metavar="APP_ID", help="only this app")
    _format_flag(diff)


def _server_flags(parser: argparse.ArgumentParser) -> None:
    """The server's own files, so that the command decides what that server decides."""
    group = parser.add_argument_group("the server's checks (pass its files, as to serve)")
    group.add_argument("--key-policy", default="", metavar="FILE", help="as serve --key-policy")
    group.add_argument(
        "--secret-scopes", default="", metavar="FILE", help="as serve --secret-scopes"
    )
    group.add_argument(
        "--secrets-dir",
        default="",
        metavar="DIR",
        help="as serve --secrets-dir: check every ${secret:NAME} is defined (values unread)",
    )
    group.add_argument(
        "--secret-names",
        default="",
        metavar="NAMES",
        help="comma-separated secret names the server defines (instead of --secrets-dir)",
    )


def _guardrails(args: argparse.Namespace, schema: Schema, versions: tuple[str, ...]) -> Guardrails:
    policy = load_policy(args.key_policy, schema.fields)
    scopes = load_secret_scopes(args.secret_scopes) if args.secret_scopes else None
    # With versions declared nothing imports lmcache here (the hook stays fast): the bundled
    # rules decide, as the installed lmcache's validation does on the server (tested).
    engine: EngineCheck = BundledRules() if versions else engine_check()
    return Guardrails(policy=policy, engine=engine, scopes=scopes)


def _server_checks(
    args: argparse.Namespace, config_set: ConfigSet, schema: Schema
) -> tuple[list[ConfigIssue], list[str]]:
    """The guardrails' issues, and what could not be checked without the server."""
    guardrails = _guardrails(args, schema, config_set.lmcache_versions)
    issues = guardrails.issues(config_set)
    unchecked = [
        "apps in use: the server refuses a commit that removes an app workers asked for "
        "within --fleet-ttl, unless its message has 'Removes-Apps: <ids>'"
    ]
    names = {name for f in config_set.all_files() for s in f.all_settings() for name in s.secrets}
    if args.secrets_dir or args.secret_names:
        defined = _defined_secrets(args, names)
        for config_file in config_set.all_files():
            for setting in config_file.all_settings():
                for name in setting.secrets:
                    if name not in defined:
                        issues.append(
                            ConfigIssue(
                                path=setting.origin.path,
                                line=setting.origin.line,
                                column=1,
                                message=f"secret '{name}' is not defined on the server",
                            )
                        )
    elif names:
        unchecked.append(
            f"{len(names)} secret(s) used: whether the server defines them "
            "(pass --secrets-dir or --secret-names)"
        )
    if names and guardrails.scopes is None:
        unchecked.append("secret scopes (pass --secret-scopes)")
    return sorted(set(issues)), unchecked


def _defined_secrets(args: argparse.Namespace, names: set[str]) -> set[str]:
    if args.secret_names:
        return {name.strip() for name in args.secret_names.split(",") if name.strip()}
    source = SecretSource(args.secrets_dir)
    return {name for name in names if source.defines(name)}


def _format_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text")


def _repo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", default=".", metavar="PATH", help="the repository (any directory in it)"
    )
    parser.add_argument(
        "--path",
        default="",
        metavar="SUBDIR",
        help="subdirectory of the repository holding global.yaml and apps/ (as serve --path)",
    )


def quiet_schema() -> SchemaChoice:
    """The schema the server would use, chosen per commit: the versions its global.yaml
    declares (bundled data, no lmcache needed), else the installed lmcache's (its import
    chatter dropped)."""
    return SchemaChoice()


def _open_repo(path: str) -> Repo:
    try:
        return Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise SettingsError(f"'{path}' is not inside a git repository") from None


def _load_rev(
    repo: Repo, rev: str, subdir: str, schema: Schema | SchemaChoice
) -> tuple[CommitInfo, ConfigSet | None, list[ConfigIssue]]:
    try:
        return load_commit(repo, rev, subdir, schema)
    except (git.BadName, git.BadObject, ValueError):
        raise SettingsError(f"unknown revision '{rev}'") from None


def _ref_or_head_of_bare(path: str, ref: str | None) -> str | None:
    """A bare repository has no files on disk to read: read its HEAD commit instead."""
    root = Path(path)
    if ref is None and (root / "HEAD").is_file() and (root / "objects").is_dir():
        return "HEAD"
    return ref


def _check_subdir(subdir: str) -> str:
    if (problem := subdir_problem(subdir)) is not None:
        raise SettingsError(problem)
    return subdir.strip("/")


def _app_id(app_id: str | None) -> str | None:
    if app_id is None:
        return None
    try:
        return check_app_id(app_id)
    except InvalidAppId as invalid:  # a usage error here: exit 2
        raise SettingsError(invalid.message) from None


def _print_issues(issues: Sequence[ConfigIssue | ConfigWarning], out: TextIO) -> None:
    for issue in issues:
        print(issue, file=out)


# -- validate --


def run_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    started = time.perf_counter()
    schema = quiet_schema()
    commit: str | None = None
    path = os.path.normpath(args.path)
    if args.ref is None:
        if not Path(path).is_dir():
            raise SettingsError(f"'{args.path}' is not a directory")
        prefix = "" if path == "." else path.rstrip("/") + "/"
        config_set, issues = load_directory(Path(path), schema, prefix=prefix)
    else:
        repo = _open_repo(path)
        try:
            top = Path(str(repo.working_tree_dir)).resolve()
            subdir = Path(path).resolve().relative_to(top).as_posix()
            info, config_set, issues = _load_rev(
                repo, args.ref, "" if subdir == "." else subdir, schema
            )
        finally:
            repo.close()
        commit = info.sha
    unchecked: list[str] = []
    if config_set is not None:
        refused, unchecked = _server_checks(
            args, config_set, schema.with_versions(config_set.lmcache_versions)
        )
        if refused:
            config_set, issues = None, refused
    warnings: list[ConfigWarning] = list(config_set.warnings) if config_set else []
    if config_set is not None and args.ref in (None, "HEAD"):  # the files on disk are those
        warnings += stale_schemas(Path(path), config_set.lmcache_versions)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if args.format == "json":
        report = {
            "valid": config_set is not None,
            "commit": commit,
            "apps": sorted(config_set.apps) if config_set else [],
            "fragments": sorted(config_set.fragments) if config_set else [],
            "issues": [issue.as_json() for issue in issues],
            "warnings": [warning.as_json() for warning in warnings],
            # The versions global.yaml declares are part of the schema it was checked with.
            "schema": schema.with_versions(config_set.lmcache_versions).source
            if config_set
            else schema.with_versions(()).source,
            "not_checked": unchecked,
        }
        print(json.dumps(report, indent=2), file=out)
    else:
        _print_issues(issues, out)
        where = f"commit {commit[:12]}" if commit else args.path
        if config_set is None:
            files = len({issue.path for issue in issues})
            print(f"{len(issues)} error(s) in {files} file(s) of {where}", file=err)
        else:
            _print_issues(warnings, out)  # warnings alone never fail validate
            warned = f"{len(warnings)} warning(s), " if warnings else ""
            print(
                f"{where}: valid ({len(config_set.apps)} app(s), "
                f"{len(config_set.fragments)} fragment(s), {warned}{elapsed_ms:.0f} ms)",
                file=err,
            )
            for note in unchecked:
                print(f"not checked here, only on the server: {note}", file=err)
    return EXIT_OK if config_set is not None else EXIT_INVALID


# -- render --


def _assignments(pairs: Sequence[str], flag: str, *, typed: bool) -> dict[str, Any]:
    try:
        return parse_assignments(pairs, typed=typed)
    except AssignmentProblem as problem:
        raise SettingsError(f"{flag} takes NAME=VALUE, got {problem.line!r}") from None


def _origins(setting: EffectiveSetting) -> str:
    return ", ".join(str(origin) for origin in setting.origins)


def run_render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    app_id = _app_id(args.app_id)
    assert app_id is not None
    env = _assignments(args.env, "--env", typed=False)
    config = _assignments(args.config, "--config", typed=True)
    subdir = _check_subdir(args.path)
    schema = quiet_schema()
    args.ref = _ref_or_head_of_bare(args.repo, args.ref)
    if args.ref is None:
        root = Path(args.repo) / subdir
        if not root.is_dir():
            raise SettingsError(f"'{root}' is not a directory")
        config_set, issues = load_directory(root, schema, prefix=display_prefix(subdir))
        info = CommitInfo(
            sha=WORKING_TREE, author="", authored_at="", subject=f"files on disk in {root}"
        )
    else:
        repo = _open_repo(args.repo)
        try:
            info, config_set, issues = _load_rev(repo, args.ref, subdir, schema)
        finally:
            repo.close()
    if config_set is not None:
        refused, _ = _server_checks(
            args, config_set, schema.with_versions(config_set.lmcache_versions)
        )
        if refused:
            config_set, issues = None, refused
    if config_set is None:
        _print_issues(issues, err)
        print("the config set is invalid: the server would not serve it", file=err)
        return EXIT_INVALID
    snapshot = Snapshot(
        commit=info,
        config_set=config_set,
        loaded_at=time.time(),
        schema_source=schema.with_versions(config_set.lmcache_versions).source,
    )
    try:
        answer = snapshot.answer(app_id, env, config)
    except AccessDenied as denied:
        if args.format == "json":
            error = {"status": denied.status, "code": denied.code, "message": denied.message}
            print(json.dumps({"error": error}), file=out)
        else:
            print(
                f"the server would refuse this worker ({denied.status}): {denied.message}", file=out
            )
        return EXIT_INVALID
    if args.format == "json":
        out.write(answer.body.decode())
        if out.isatty():
            out.write("\n")
        if not answer.app_known:  # the answer bytes stay exact: the hint goes to stderr
            print(f"note: no apps/{app_id}.yaml{_did_you_mean(snapshot, app_id)}", file=err)
        return EXIT_OK
    _print_render(snapshot, app_id, env, config, out)
    return EXIT_OK


def _did_you_mean(snapshot: Snapshot, app_id: str) -> str:
    near = snapshot.nearest_app(app_id)
    return f"; did you mean {app_file(near)}?" if near else ""


def _print_render(
    snapshot: Snapshot, app_id: str, env: Mapping[str, Any], config: Mapping[str, Any], out: TextIO
) -> None:
    """The text form: files, each rule and why it did or did not apply, then every key."""
    info = snapshot.commit
    answer = snapshot.answer(app_id, env, config)
    effective, _ = snapshot.effective(app_id, env, config)
    where = "working tree" if info.sha == WORKING_TREE else f"commit {info.sha[:12]}"
    print(f"{app_id} at {where}: {info.subject}", file=out)
    if not answer.app_known:
        print(
            f"no apps/{app_id}.yaml: the global layer only{_did_you_mean(snapshot, app_id)}",
            file=out,
        )
    plan = snapshot.plan(app_id)
    print(f"files: {', '.join(f.path for f in plan.files) or '(none)'}", file=out)
    for outcome in rule_outcomes(plan, app_id, env, config):
        if outcome.applied:
            print(f"rule applied: {outcome.rule.name} ({outcome.at})", file=out)
        else:
            print(
                f"rule not applied: {outcome.rule.name} ({outcome.at}): {outcome.reason}",
                file=out,
            )
    print("", file=out)
    rows = []
    for item in json.loads(answer.body)["configs"]:
        setting = effective[item["key"]]
        flag = "override" if item["override"] else "default"
        shown = json.dumps(setting.value, sort_keys=True)
        rows.append((item["key"], shown, flag, _origins(setting)))
    if not rows:
        print("(no settings)", file=out)
    key_width = max((len(row[0]) for row in rows), default=0)
    value_width = min(max((len(row[1]) for row in rows), default=0), 48)
    for key, value, flag, origin in rows:
        print(f"{key:<{key_width}}  {value:<{value_width}}  {flag:<8}  {origin}", file=out)


# -- diff --


def run_diff(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    app_id = _app_id(args.app)
    subdir = _check_subdir(args.path)
    schema = quiet_schema()
    repo = _open_repo(args.repo)
    try:
        before_info, before, before_issues = _load_rev(repo, args.rev_a, subdir, schema)
        after_info, after, after_issues = _load_rev(repo, args.rev_b, subdir, schema)
    finally:
        repo.close()
    names = f"`{args.rev_a}` ({before_info.sha[:12]}) → `{args.rev_b}` ({after_info.sha[:12]})"
    invalid = [
        (rev, info, issues)
        for rev, info, issues in (
            (args.rev_a, before_info, before_issues),
            (args.rev_b, after_info, after_issues),
        )
        if issues
    ]
    if before is None or after is None:
        if args.format == "json":
            report = {
                "from": before_info.sha,
                "to": after_info.sha,
                "valid": False,
                "invalid": {
                    info.sha: [issue.as_json() for issue in issues] for _, info, issues in invalid
                },
            }
            print(json.dumps(report, indent=2), file=out)
        else:
            print(f"### LMCache config: {names}", file=out)
            for rev, info, issues in invalid:
                print(
                    f"\n`{rev}` ({info.sha[:12]}) does not validate; the server would keep "
                    "serving the previous commit:\n\n```",
                    file=out,
                )
                _print_issues(issues, out)
                print("```", file=out)
        return EXIT_INVALID
    diffs = diff_config_sets(before, after, app_id)
    removed = sorted(set(before.apps) - set(after.apps))
    undeclared = [app for app in removed if not _declared(app, after_info)]
    if args.format == "json":
        report = {
            "from": before_info.sha,
            "to": after_info.sha,
            "valid": True,
            "prefix": display_prefix(subdir),
            "apps": [diff.as_json() for diff in diffs],
            "removed_apps": removed,
            "removals_not_declared": undeclared,
        }
        print(json.dumps(report, indent=2), file=out)
    else:
        out.write(diff_markdown(diffs, title=f"LMCache config: effective changes {names}"))
        if undeclared:
            listed = ", ".join(undeclared)
            print(
                f"\n**Removes app(s) {listed}** without a `Removes-Apps: {listed}` trailer in "
                f"the message of `{args.rev_b}`: the server refuses this commit if workers "
                "asked for them within `--fleet-ttl`.",
                file=out,
            )
    return EXIT_OK


def _declared(app: str, info: CommitInfo) -> bool:
    return app in info.removes_apps or "*" in info.removes_apps


COMMANDS: Mapping[str, Callable[[argparse.Namespace, TextIO, TextIO], int]] = MappingProxyType(
    {"validate": run_validate, "render": run_render, "diff": run_diff}
)


def run(args: argparse.Namespace) -> int:
    """Run one authoring command; SettingsError (exit 2) for usage errors."""
    return COMMANDS[args.command](args, sys.stdout, sys.stderr)
