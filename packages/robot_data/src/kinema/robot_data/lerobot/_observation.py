"""LeRobot-style observation dicts -> kinema's: what lets a policy trained by kinema act on the observations a
LeRobot environment or robot loop hands out (``observation.state``, ``observation.images.<cam>``, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._layout import DEFAULT_KEY_MAP, IMAGE_PREFIX


def kinema_observation(observation: Mapping[str, Any], key_map: Mapping[str, str] | None = None) -> dict:
    """``observation`` with LeRobot's names mapped to kinema's: ``observation.state`` -> ``qpos``,
    ``observation.environment_state`` -> ``environment_state``, ``observation.velocity`` -> ``qvel``,
    ``observation.images.<cam>`` -> ``images[<cam>]`` (``key_map`` as for datasets: LeRobot name -> kinema name, a
    camera as ``images/<cam>``). A dict without LeRobot names is returned as it is; other keys pass through. A
    value given under both names is an error naming both (never one silently dropped)."""
    if not any(k.startswith("observation.") or k in (key_map or {}) for k in observation):
        return dict(observation)
    names = dict(DEFAULT_KEY_MAP if key_map is None else key_map)
    out: dict[str, Any] = {}
    images: dict[str, Any] = dict(observation.get("images") or {})
    for key, value in observation.items():
        if key == "images":
            continue
        target = names.get(key)
        if target is None and key.startswith(IMAGE_PREFIX) and key_map is None:
            target = f"images/{key[len(IMAGE_PREFIX) :]}"
        if target is not None and target.startswith("images/"):
            camera = target.removeprefix("images/")
            if camera in images:
                raise ValueError(f"observation: camera {camera!r} given twice, as {key!r} and in 'images'")
            images[camera] = value
            continue
        target = target or key
        if target in out or (target != key and target in observation):
            raise ValueError(f"observation: {target!r} given twice, as {key!r} and as {target!r}")
        out[target] = value
    if images:
        out["images"] = images
    return out
