"""What the chunk-policy configs share (ACTConfig here, HybridConfig in kinema.hybrid_policy): the checks of the
observation and chunking fields, and the JSON round trip of a checkpoint's config file.

A subclass is a dataclass with the fields named below and the class attributes ``CONFIG_FILE`` (the file in a
checkpoint folder), ``FORMAT`` (the tag written into it) and ``LABEL`` (the model's name in messages). Messages
name the field as ``<ClassName>.<field>``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import ClassVar

# fields every chunk policy has and that must be integers >= 1
_SHARED_POSITIVE = (
    "state_dim",
    "action_dim",
    "chunk_size",
    "n_action_steps",
    "dim_model",
    "n_heads",
    "dim_feedforward",
    "n_encoder_layers",
    "backbone_width",
)


class FieldChecks:
    """Checks of a config's numeric fields, raising ValueError("<ClassName>.<field>: ..."); shared by the policy
    configs and the training configs."""

    def _fail(self, name: str, message: str) -> ValueError:
        return ValueError(f"{type(self).__name__}.{name}: {message}")

    def check_positive_int(self, name: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._fail(name, f"expected an integer >= 1, got {value!r}")

    def check_non_negative_int(self, name: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(name, f"expected an integer >= 0, got {value!r}")

    def check_non_negative(self, name: str) -> None:
        value = getattr(self, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise self._fail(name, f"expected a finite number >= 0, got {value!r}")


class ChunkPolicyConfig(FieldChecks):
    """Mixin for the policy config dataclasses (see the module docstring)."""

    CONFIG_FILE: ClassVar[str]
    FORMAT: ClassVar[str]
    LABEL: ClassVar[str]

    # ------------------------------------------------------------------------------------------- checks

    def check_shared_fields(self, positive: tuple[str, ...] = ()) -> None:
        """Cameras, the shared sizes (and ``positive``, the subclass's own integer fields), coordinates, image
        size, chunk execution, attention width, dropout, the pretrained backbone and BatchNorm freezing, notes.
        Normalizes camera_names and image_size to tuples and pretrained_backbone to a string."""
        if isinstance(self.camera_names, str) or not self.camera_names:
            raise self._fail("camera_names", f"expected a non-empty list of names, got {self.camera_names!r}")
        self.camera_names = tuple(self.camera_names)
        if not all(isinstance(c, str) and c for c in self.camera_names):
            raise self._fail("camera_names", f"expected non-empty strings, got {self.camera_names!r}")
        if len(set(self.camera_names)) != len(self.camera_names):
            raise self._fail("camera_names", f"duplicate cameras in {self.camera_names!r}")
        for name in (*_SHARED_POSITIVE, *positive):
            self.check_positive_int(name)
        self.check_non_negative_int("environment_state_dim")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 32 for v in size
            ):
                raise self._fail(
                    "image_size", f"expected (H, W), each >= 32, or None; got {self.image_size!r}"
                )
            self.image_size = size
        if self.n_action_steps > self.chunk_size:
            raise self._fail(
                "n_action_steps", f"{self.n_action_steps} is more than chunk_size {self.chunk_size}"
            )
        if self.temporal_ensemble_coeff is not None:
            self.check_non_negative("temporal_ensemble_coeff")
            if self.n_action_steps != 1:
                raise self._fail(
                    "temporal_ensemble_coeff",
                    "temporal ensembling queries the model every step, so n_action_steps must be 1, got "
                    f"{self.n_action_steps}",
                )
        if self.dim_model % self.n_heads:
            raise self._fail("dim_model", f"{self.dim_model} is not divisible by n_heads {self.n_heads}")
        if self.dim_model % 4:
            raise self._fail(
                "dim_model", f"expected a multiple of 4 (2-D sine embedding), got {self.dim_model}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise self._fail("dropout", f"expected 0 <= dropout < 1, got {self.dropout!r}")
        if self.pretrained_backbone is not None:
            self.pretrained_backbone = str(self.pretrained_backbone)
            if self.backbone_width != 64:
                raise self._fail(
                    "pretrained_backbone",
                    f"torchvision's resnet18 has width 64, backbone_width is {self.backbone_width}",
                )
        if self.frozen_batchnorm is None:  # frozen statistics only make sense for pretrained weights
            self.frozen_batchnorm = self.pretrained_backbone is not None
        if not isinstance(self.notes, dict):
            raise self._fail("notes", f"expected a dict, got {type(self.notes).__name__}")

    @property
    def use_environment_state(self) -> bool:
        return self.environment_state_dim > 0

    # ---------------------------------------------------------------------------------------- serialization

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["camera_names"] = list(self.camera_names)
        data["image_size"] = None if self.image_size is None else list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config"):
        name = cls.__name__
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object of {name} fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown {name} fields {unknown} (a config of another model or kinema version?)"
            )
        values = dict(data)
        for key in ("camera_names", "image_size"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from error

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``<directory>/<CONFIG_FILE>`` atomically."""
        from ._io import write_json_atomic

        return write_json_atomic(
            Path(directory) / self.CONFIG_FILE,
            {"format": self.FORMAT, "version": 1, "config": self.to_dict()},
        )

    @classmethod
    def load(cls, path: str | os.PathLike):
        """From the config file or the checkpoint folder that holds it."""
        path = Path(path)
        if path.is_dir():
            path = path / cls.CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no {cls.LABEL} config (expected {cls.CONFIG_FILE} in the checkpoint folder)"
            )
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(payload, dict) or payload.get("format") != cls.FORMAT:
            raise ValueError(f'{path}: expected a JSON object with "format": "{cls.FORMAT}"')
        return cls.from_dict(payload.get("config"), source=str(path))

    def differences(self, other, ignore: tuple[str, ...] = ("notes",)) -> dict[str, tuple]:
        """{field: (self's value, other's value)} for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}
