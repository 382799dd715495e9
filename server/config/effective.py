"""Layering: how the settings of an app's files become the answer's items.

A later layer wins a key (value and override flag together); ``extra_config``
mappings merge key by key. The answer's ``configs`` list is sorted by key,
with ``extra_config`` as a JSON string, as the LMCache client reads it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .model import Origin, Setting
from .secret_refs import resolve_secrets

EXTRA_CONFIG = "extra_config"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EffectiveSetting:
    key: str
    value: Any
    override: bool
    origins: tuple[Origin, ...]  # the writer of the flag and value last; extra_config may have more


def merge(layers: Iterable[Iterable[Setting]]) -> dict[str, EffectiveSetting]:
    merged: dict[str, EffectiveSetting] = {}
    for layer in layers:
        for setting in layer:
            previous = merged.get(setting.key)
            if (
                setting.key == EXTRA_CONFIG
                and previous is not None
                and isinstance(previous.value, dict)
                and isinstance(setting.value, dict)
            ):
                merged[setting.key] = EffectiveSetting(
                    key=setting.key,
                    value={**previous.value, **setting.value},
                    override=setting.override,
                    origins=(*previous.origins, setting.origin),
                )
            else:
                merged[setting.key] = EffectiveSetting(
                    key=setting.key,
                    value=setting.value,
                    override=setting.override,
                    origins=(setting.origin,),
                )
    return merged


def answer_items(
    effective: Mapping[str, EffectiveSetting], secrets: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The ``configs`` list: sorted by key, canonical types, extra_config as a JSON string.

    With ``secrets``, ${secret:NAME} references are resolved (the /config answer);
    without, they stay as written (render, diff: what a reviewer may see).
    """
    items = []
    for key in sorted(effective):
        setting = effective[key]
        value = setting.value
        if secrets is not None:
            value = resolve_secrets(value, secrets)
        if key == EXTRA_CONFIG and value is not None:
            value = json.dumps(value, sort_keys=True, separators=(",", ":"))
        items.append({"key": key, "value": value, "override": setting.override})
    return items
