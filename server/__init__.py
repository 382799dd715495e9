"""GitOps config server for LMCache fleets.

The module map. Each subpackage is a layer; imports point down only
(``cli > run > web > processes > shared > ops > sync > settings > git > config > base``),
which ``make lint`` checks (``.importlinter``). Each layer's ``__init__``
states its rule: what it may import, which thread it runs on, what it never
does. Where to look:

- a worker's request is answered in ``web/config_api.py``, from the snapshot
  in ``sync/state.py``'s ``SnapshotHolder``;
- a commit becomes a snapshot in ``sync/builder.py`` (verify, load, resolve
  secrets, build), on the sync thread;
- git is fetched in ``git/mirror.py``, driven by the loop in ``sync/syncer.py``;
- the LMCache schema lives in ``config/schema.py`` (and ``config/data/``).

::

    settings.py          every setting defined once (flags, env vars, file, README table)

    base/                knows nothing of LMCache, git or HTTP
      errors.py            the one exception tree: request errors (4xx) apart from internal
      issues.py            ConfigIssue: path:line:col: error: message
      yaml_source.py       YAML with marks, duplicate keys and aliases refused, no tags
      logs.py, redact.py   log lines (text or JSON) and credential redaction
      tasks.py             guarded never-ending tasks; OneThread (the sync and view threads);
                           Precedence (views step aside while a build runs)
      secret_file.py       reading a file that holds one secret
      reloading.py         Current[T] cells; files reloaded on change (stamps, old kept if bad)
      assignments.py       NAME=VALUE lines (render --env, the dashboard's form)

    config/              the config-repository language and its answers: pure values
      names.py             root files, apps/ naming, the app-id rule, --path, include paths
      model.py             Setting, Condition, Rule, Include, ConfigFile, ConfigSet
      schema.py            LMCache's fields per version (bundled 0.3.13-0.5.6; installed lmcache)
      limits.py            values in range: the bounds of data/lmcache-ranges.tsv
      versions.py          lmcache_versions in global.yaml: the versions a commit is checked for
      parser.py            one file's sections, every issue with its line
      loader.py            a whole tree within RepoLimits: includes, cycles, the parse memo
      hints.py             what would be silent: YAML nothing reads, no config, "did you mean"
      parse_memo.py        parsed files kept from one build to the next
      sources.py           the source protocol; memory and directory sources
      secret_refs.py       ${secret:NAME} references
      rollout.py           percent rollouts
      effective.py         layering: settings merged into the answer's items
      snapshot.py          one validated commit and the answers it gives (AppPlan)
      views.py             effective views and diffs of apps (diff, /history)
      explain.py           why a rule does or does not apply (render and the dashboard)
      json_schema.py       the files' JSON Schema for editors, from the definitions above

    git/                 blocking, on a git thread; never imports sync, web or Settings
      remote.py            what --repo names: a URL, scp-style, or a local path
      mirror.py            the bare mirror: clone, fetch, resolve; MirrorReader per thread
      tree_reader.py       a commit's files in one ls-tree and one cat-file --batch
      commits.py           commit metadata; a commit as a source (authoring commands)
      history.py           per-app history walks
      data_dir.py          the data dir's layout, its lock, the last-good record
      pin_store.py         the emergency pin (Pin), the PinStore protocol, its data-dir file
      credentials.py, signatures.py

    sync/                what is served: its git work runs on the sync thread, views on
                         the view thread; the only writer of the served-snapshot
                         reference; never imports Settings
      state.py             SyncTrigger, SyncResult, RejectionKind, records, SnapshotHolder
      builder.py           commit -> Snapshot or Rejection, in named stages
      syncer.py            the loop: triggers, coalescing, backoff, records, publish
      viewer.py            history and past commits, on the view thread
      control.py           what the web layer may ask of syncing (SyncControl)
      secrets.py, freshness.py, upstream_watch.py
      file_watch.py        polls the credential files each second; applies on the loop

    ops/                 what operators read; never changes what is served; no aiohttp
      fleet.py             which worker holds which commit
      metrics.py           Prometheus, in the app's own registry
      metrics_env.py       the multiprocess metrics directory (never imports prometheus)
      status.py            the status view behind /status and the dashboard

    processes/           --workers N: a leader and its followers; no aiohttp
      role.py, channel.py  which process this is; the messages between them
      pool.py              the leader's followers (entry point handed in from run/)
      follower.py          a follower serving the leader's commits

    shared/              --redis: what several replicas share; never on the answer path
      target.py, health.py where Redis is, key names; whether it answers (redacted errors)
      rows.py, peers.py    fleet rows and the sightings buffer; replicas' heartbeats
      replicas.py          heartbeat, fan-out (pub/sub) and fleet exchange tasks
      collector.py         the shared-state metrics

    web/                 aiohttp lives here only
      keys.py              every typed AppKey and RequestKey
      middleware.py        request id, authorization, JSON errors, log line, metrics
      authorize.py         which endpoint needs which credential (and the loopback rule)
      auth.py, params.py, request_body.py, webhooks.py, in_flight.py
      config_api.py        /config, the worker-facing endpoint
      operator_api.py      /status, /history, /fleet, /metrics, probes, /admin/refresh, pin
      webhook_api.py       /webhook/*
      dashboard.py, templates/

    run/                 wiring and entry points
      compose.py           the composition root: every shared collaborator, built once
      app.py               create_app: keys, routes and one cleanup_ctx per resource
      serve.py             the process lifecycle and the followers' entry point
      credentials.py       the reloaded credential files of one process (auth, webhook, secrets)
      tls.py

    cli/                 the command line
      main.py              serve, hash-token
      authoring.py         validate, render, diff
      editor_schema.py     schema: writes the JSON Schema files editors read

Logger names are written out (``logging.getLogger("server.sync")``), so that
moving a file never changes a log line.
"""

__version__ = "0.1.0"
