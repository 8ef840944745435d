"""VACE-E task metadata (``ph2d_metadata.json`` style) and the prompts made from it.

``per_task_attributes`` is keyed by the full task folder name, e.g. ``"104-lars-grasping_2024-11-08_15-23-40"``,
each entry holding ``task_type``, ``embodiment_type``, ``left_hand``, ``right_hand`` and ``objects``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ._errors import RobotDataError, require_exists

TASK_FIELDS = ("task_type", "embodiment_type", "left_hand", "right_hand", "objects")


@dataclass(frozen=True)
class TaskAttributes:
    """One task's entry of ``per_task_attributes``."""

    task_id: str
    task_type: str
    embodiment_type: str
    left_hand: bool
    right_hand: bool
    objects: str

    @property
    def prompt(self) -> str:
        return task_prompt(self)


def load_task_metadata(path: str | os.PathLike) -> dict[str, dict]:
    """The ``per_task_attributes`` mapping of a metadata JSON; a missing or malformed file raises
    :class:`RobotDataError` naming it (a dataset-level error, raised in lenient mode too)."""
    path = require_exists(path, "metadata")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RobotDataError(path, "metadata", f"not valid JSON ({error})") from error
    except IsADirectoryError as error:
        raise RobotDataError(path, "metadata", "is a directory, expected a JSON file") from error
    if not isinstance(data, dict) or not isinstance(data.get("per_task_attributes"), dict):
        raise RobotDataError(path, "per_task_attributes", "expected an object keyed by task folder name")
    return data["per_task_attributes"]


def task_attributes(per_task: dict[str, dict], task_id: str, source: str | os.PathLike) -> TaskAttributes:
    """``per_task[task_id]`` checked field by field; errors name ``per_task_attributes.<task>.<field>``."""
    where = f"per_task_attributes.{task_id}"
    if task_id not in per_task:
        raise RobotDataError(source, where, "task id missing from the metadata")
    entry = per_task[task_id]
    if not isinstance(entry, dict):
        raise RobotDataError(source, where, f"expected an object, got {type(entry).__name__}")
    missing = [f for f in TASK_FIELDS if f not in entry]
    if missing:
        raise RobotDataError(source, where, f"missing field(s) {missing}")
    for name in ("left_hand", "right_hand"):
        if not isinstance(entry[name], bool):
            raise RobotDataError(source, f"{where}.{name}", f"expected true or false, got {entry[name]!r}")
    for name in ("task_type", "embodiment_type", "objects"):
        if not isinstance(entry[name], str):
            raise RobotDataError(source, f"{where}.{name}", f"expected a string, got {entry[name]!r}")
    return TaskAttributes(
        task_id,
        entry["task_type"],
        entry["embodiment_type"],
        entry["left_hand"],
        entry["right_hand"],
        entry["objects"],
    )


def task_prompt(task: TaskAttributes) -> str:
    """The text prompt of a task.

    One hand: ``"Right hand grasping white bottle with black lid."`` (objects end with a period).
    Two hands: ``"Pouring, left hand cup, right hand bottle"``: the first listed object goes to the left hand, the
    rest to the right (a single object: ``"Pouring, both hands box"``). No hand flagged: ``"Pouring cup, bottle."``.
    """
    kind = task.task_type.strip().replace("_", " ")
    objects = task.objects.strip()
    sentence = objects if objects.endswith(".") or not objects else objects + "."
    if task.left_hand != task.right_hand:
        side = "Left" if task.left_hand else "Right"
        return f"{side} hand {kind} {sentence}".strip()
    if task.left_hand and task.right_hand:
        parts = [p.strip().rstrip(".").strip() for p in objects.split(",")]
        parts = [p for p in parts if p]
        title = kind[:1].upper() + kind[1:]
        if len(parts) >= 2:
            return f"{title}, left hand {parts[0]}, right hand {', '.join(parts[1:])}"
        return f"{title}, both hands {parts[0]}" if parts else title
    return f"{kind[:1].upper() + kind[1:]} {sentence}".strip()
