"""LMCache's own validation, run on what a worker would end up with.

The client applies served values without re-validating its config, so a
combination that LMCache's ``LMCacheEngineConfig.validate`` refuses (e.g.
``enable_controller: true`` without its URLs) crashes the engine at startup:
the server is the only place that can stop it. For each app of a commit, and
each rule outcome that can be reached (no rule, each rule alone, every rule),
the answer is applied onto LMCache's default config the way the worker does
and validated:

- with the ``lmcache`` package installed: by its own ``validate`` (the source
  of truth, whatever its version adds);
- without it: by the project's transcription of LMCache 0.5.6's cross-field
  rules (``BundledRules``), which needs nothing installed.

Only keys that the validation reads can make it fail, so an app whose layers
set none of them is not checked at all (``relevant_keys``).
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import inspect
import logging
import re
import textwrap
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol

log = logging.getLogger("server.lmcache_schema")

# Stands in for what every worker has at runtime and no answer may serve (the key policy).
WORKER_INSTANCE_ID = "worker-under-check"


class EngineCheck(Protocol):
    source: str  # which validation this is, for messages and /status
    relevant_keys: frozenset[str]  # keys whose value the validation reads

    def problem(self, values: Mapping[str, Any]) -> str | None:
        """Why LMCache refuses a config holding ``values`` on top of its defaults."""
        ...


_WORD = re.compile(r"[a-z][a-z0-9_]+")


def keys_named(message: str, known: frozenset[str]) -> tuple[str, ...]:
    """The config keys a validation message names, in order."""
    return tuple(dict.fromkeys(word for word in _WORD.findall(message) if word in known))


class InstalledLMCache:
    """The installed lmcache's ``LMCacheEngineConfig.validate``, on its ``apply_remote_configs``."""

    def __init__(self) -> None:
        config_module = importlib.import_module("lmcache.v1.config")
        base_module = importlib.import_module("lmcache.v1.config_base")
        version = getattr(importlib.import_module("lmcache"), "__version__", "unknown")
        self.source = f"installed lmcache {version}"
        self._apply: Callable[[Any, dict[str, Any]], Any] = base_module.apply_remote_configs
        defaults = config_module.LMCacheEngineConfig.from_defaults()
        defaults.lmcache_instance_id = WORKER_INSTANCE_ID
        self._defaults = defaults
        fields = frozenset(config_module._CONFIG_DEFINITIONS)
        self.relevant_keys = _attributes_read(config_module, fields)
        # Applying and validating log every value and every adjustment at info: quiet, for
        # good (levels are process-wide; setting them per call would race other threads).
        for name in ("lmcache.v1.config_base", "lmcache.v1.config"):
            logging.getLogger(name).setLevel(logging.ERROR)

    def problem(self, values: Mapping[str, Any]) -> str | None:
        config = copy.deepcopy(self._defaults)
        items = [{"key": key, "value": value, "override": True} for key, value in values.items()]
        try:
            config = self._apply(config, {"configs": items})
            config.validate()
        except (ValueError, AssertionError, TypeError, KeyError, AttributeError) as exc:
            return _describe(exc)
        return None


def _attributes_read(config_module: Any, fields: frozenset[str]) -> frozenset[str]:
    """The fields ``validate`` reads (``self.x``), from its source; every field when unreadable."""
    try:
        source = textwrap.dedent(inspect.getsource(config_module._validate_config))
        tree = ast.parse(source)
    except (AttributeError, OSError, TypeError, SyntaxError):
        return fields
    read = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }
    return frozenset(read & fields) | {"extra_config"}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if text:
        return text
    # A bare ``assert``: its source line says what it requires.
    frames = traceback.extract_tb(exc.__traceback__)
    line = frames[-1].line if frames else None
    return f"requires {line.removeprefix('assert ').strip()}" if line else type(exc).__name__


# What LMCache 0.5.6's defaults are for the keys BundledRules reads.
_DEFAULTS_0_5_6: dict[str, Any] = {
    "min_retrieve_tokens": 0,
    "enable_controller": False,
    "lmcache_instance_id": WORKER_INSTANCE_ID,
    "controller_pull_url": None,
    "controller_reply_url": None,
    "lmcache_worker_ports": None,
    "enable_p2p": False,
    "p2p_host": None,
    "p2p_init_ports": None,
    "p2p_lookup_ports": None,
    "transfer_channel": None,
    "enable_pd": False,
    "pd_role": None,
    "pd_buffer_size": None,
    "pd_buffer_device": None,
    "pd_backend_mode": "async",
    "store_location": None,
    "retrieve_locations": None,
    "extra_config": None,
    "nixl_buffer_device": None,
    "nixl_buffer_size": None,
    "max_local_cpu_size": 5.0,
}


class BundledRules:
    """LMCache 0.5.6's cross-field rules (``_validate_config``), written out for use without it."""

    source = "the bundled rules of LMCache 0.5.6"
    relevant_keys = frozenset(_DEFAULTS_0_5_6) - {"lmcache_instance_id"}

    def problem(self, values: Mapping[str, Any]) -> str | None:
        config = {**_DEFAULTS_0_5_6, **values}
        for rule in (_basic, _controller, _p2p, _pd, _nixl_storage):
            found = rule(config)
            if found is not None:
                return found
        return None


def _basic(c: dict[str, Any]) -> str | None:
    if c["min_retrieve_tokens"] < 0:
        return f"min_retrieve_tokens must be >= 0, got {c['min_retrieve_tokens']}"
    return None


def _controller(c: dict[str, Any]) -> str | None:
    if not c["enable_controller"]:
        return None
    for key in ("lmcache_instance_id", "controller_pull_url", "controller_reply_url"):
        if c[key] is None:
            return f"{key} is required when enable_controller=True"
    if not c["lmcache_worker_ports"]:
        return "lmcache_worker_ports is required and cannot be empty when enable_controller=True"
    return None


def _p2p(c: dict[str, Any]) -> str | None:
    if not c["enable_p2p"]:
        return None
    if not c["enable_controller"]:
        return "enable_p2p requires enable_controller"
    for key in ("p2p_host", "p2p_init_ports", "p2p_lookup_ports", "transfer_channel"):
        if c[key] is None:
            return f"enable_p2p requires {key}"
    return None


def _pd(c: dict[str, Any]) -> str | None:
    if not c["enable_pd"]:
        return None
    for key in ("pd_role", "pd_buffer_size", "pd_buffer_device"):
        if c[key] is None:
            return f"enable_pd requires {key}"
    if c["enable_p2p"]:
        return "PD only supports enable_p2p=False"
    if c["pd_backend_mode"] not in ("sync", "async"):
        return f"pd_backend_mode must be 'sync' or 'async', got {c['pd_backend_mode']!r}"
    if c["pd_role"] == "receiver":
        if c["store_location"] == "PDBackend":
            return "store_location cannot be PDBackend for receiver"
        if c["retrieve_locations"] not in (None, ["PDBackend"]):
            return 'for pd receiver, retrieve_locations are expected to be ["PDBackend"]'
    return None


def _nixl_storage(c: dict[str, Any]) -> str | None:
    extra = c["extra_config"] if isinstance(c["extra_config"], dict) else {}
    if not extra.get("enable_nixl_storage"):
        return None
    for key in ("nixl_backend", "nixl_pool_size"):
        if extra.get(key) is None:
            return f"extra_config.enable_nixl_storage requires extra_config.{key}"
    if extra.get("nixl_presence_cache_only") and not extra.get("nixl_presence_cache"):
        return "nixl_presence_cache must be true when nixl_presence_cache_only is true"
    if c["nixl_buffer_device"] is None:
        return "extra_config.enable_nixl_storage requires nixl_buffer_device"
    if c["nixl_buffer_device"] == "cpu":
        if c["nixl_buffer_size"] is not None:
            return "nixl_buffer_size must not be set when nixl_buffer_device='cpu'"
        if c["max_local_cpu_size"] <= 0:
            return "nixl_buffer_device='cpu' requires max_local_cpu_size > 0"
        if c["enable_p2p"]:
            return "enable_p2p=True together with NIXL storage on cpu is not supported"
    elif c["nixl_buffer_size"] is None:
        return "extra_config.enable_nixl_storage requires nixl_buffer_size"
    return None


def engine_check() -> EngineCheck:
    """The installed lmcache's validation when it imports, else the bundled rules."""
    if importlib.util.find_spec("lmcache") is not None:
        try:
            return InstalledLMCache()
        except Exception as exc:  # any failure: the bundled rules, and say why
            log.warning(
                "cannot use the installed lmcache's validation (%s); using %s",
                exc,
                BundledRules.source,
            )
    return BundledRules()
