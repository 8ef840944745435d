"""Finds injector parameters in a safetensors checkpoint and reports whether the condition is used.

An injector whose output projection (or gate) has a norm near 0, or whose output scale is near 0, adds nothing:
the model ignores its condition. Recognized parameter names (kinema's and the reference designs'):

    <prefix>.adaLN_modulation.1.weight/bias   adaln_zero   per-chunk norms (shift/scale/gate ...)
    <prefix>.action_to_tmod.weight            adaln_tmod   per-chunk norms of the 6 x D rows
    <prefix>.to_gamma_beta.weight/bias        film         norms of the gamma-delta and beta halves
    <prefix>.to_residual.weight               residual
    <prefix>.action_to_residual.weight        residual
    <prefix>.o_proj.weight (+ v_proj)         cross_attn   norm of the value path o_proj @ v_proj
    <prefix>.output_scale                     the group's learnable scale(s), one per layer

A WanActionController (kinema.video_world_model) holds every head but uses one: its file's safetensors metadata
names it (``injection_type``) and the layers it injects at (``inject_layers``). The other heads keep their random
init and would read as active, so with that metadata only the used injector and its layers' scales are reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from ._adaln import MODULATION_CHUNKS

_SUFFIXES = {
    "adaLN_modulation.1.weight": "adaln_zero",
    "action_to_tmod.weight": "adaln_tmod",
    "to_gamma_beta.weight": "film",
    "to_residual.weight": "residual",
    "action_to_residual.weight": "residual",
    "o_proj.weight": "cross_attn",
}
INACTIVE_BELOW = 1e-6
# the WanActionController's injection_type metadata -> the kind of the one head it uses
INJECTION_TYPE_KINDS = {
    "cross_attn_frame": "cross_attn",
    "adaln_tmod": "adaln_tmod",
    "add_residual": "residual",
}


@dataclass
class InjectorReport:
    """One injector found in a checkpoint. ``norms`` maps a part (e.g. ``gate_attn``) to its Frobenius norm."""

    name: str
    kind: str
    num_parameters: int
    norms: dict[str, float]
    output_scales: list[float] = field(default_factory=list)
    # the layer of each output scale, when the metadata names the injection type
    layers: list[int] = field(default_factory=list)
    injection_type: str | None = None  # from the file's metadata, when it names one

    @property
    def contribution(self) -> float:
        """How large the injected signal can be: the effective norm times the largest |output scale|."""
        gates = [v for k, v in self.norms.items() if k.startswith("gate")]
        strength = max(gates) if gates else max(self.norms.values(), default=0.0)
        if self.output_scales:
            strength *= max(abs(s) for s in self.output_scales)
        return strength

    @property
    def active(self) -> bool:
        return self.contribution > INACTIVE_BELOW


def _chunk_norms(weight: torch.Tensor, bias: torch.Tensor | None, chunks: int) -> dict[str, float]:
    names = MODULATION_CHUNKS if chunks == len(MODULATION_CHUNKS) else [f"chunk{i}" for i in range(chunks)]
    rows = weight.float().chunk(chunks, dim=0)
    biases = bias.float().chunk(chunks, dim=0) if bias is not None else [None] * chunks
    return {
        n: math.sqrt(float(w.pow(2).sum()) + (float(b.pow(2).sum()) if b is not None else 0.0))
        for n, w, b in zip(names, rows, biases)
    }


def _match(key: str) -> tuple[str, str] | None:
    """(prefix, kind) when ``key`` names an injector's main weight, else None."""
    for suffix, kind in _SUFFIXES.items():
        if key == suffix or key.endswith("." + suffix):
            return key[: -len(suffix)].rstrip("."), kind
    return None


def _norms(
    kind: str, weight: torch.Tensor, bias: torch.Tensor | None, value: torch.Tensor | None
) -> dict[str, float]:
    if kind == "adaln_zero":
        return _chunk_norms(weight, bias, _chunks_of(weight))
    if kind == "adaln_tmod":  # (6 * D, D)
        return _chunk_norms(weight, bias, weight.shape[0] // weight.shape[1])
    if kind == "film":
        halves = _chunk_norms(weight, bias, 2)
        return {"gamma_delta": halves["chunk0"], "beta": halves["chunk1"]}
    if kind == "cross_attn" and value is not None:
        return {"value_path": float(torch.linalg.matrix_norm(weight.float() @ value.float()))}
    return {"projection": _chunk_norms(weight, bias, 1)["chunk0"]}


def inspect_checkpoint(path: str | Path) -> list[InjectorReport]:
    """Reports every injector found in the safetensors file at ``path`` (raises FileNotFoundError/ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"checkpoint: {path} is not a readable safetensors file ({error})") from None
    reports = []
    with handle as f:
        keys = set(f.keys())
        injection_type, layers = _scheme(path, f.metadata() or {})

        def get(key: str) -> torch.Tensor | None:
            return f.get_tensor(key) if key in keys else None

        for key in sorted(keys):
            match = _match(key)
            if match is None:
                continue
            prefix, kind = match
            sibling = lambda name, p=prefix: f"{p}.{name}" if p else name  # noqa: E731
            weight = f.get_tensor(key)
            bias = get(key.removesuffix("weight") + "bias")
            value = get(sibling("v_proj.weight")) if kind == "cross_attn" else None
            params = sum(t.numel() for t in (weight, bias, value) if t is not None)
            scale = get(sibling("output_scale"))
            scales = [] if scale is None else [float(s) for s in scale.float().flatten()]
            scale_layers: list[int] = []
            if injection_type is not None:
                if kind != INJECTION_TYPE_KINDS[injection_type]:
                    continue  # a head this injection type never calls
                scales, scale_layers = _injected_scales(path, scales, layers)
            norms = _norms(kind, weight, bias, value)
            reports.append(
                InjectorReport(prefix or "(root)", kind, params, norms, scales, scale_layers, injection_type)
            )
    return reports


def _scheme(path: Path, metadata: dict[str, str]) -> tuple[str | None, list[int] | None]:
    """(injection_type, inject_layers) from the file's metadata; (None, None) when it names no injection type."""
    injection_type = metadata.get("injection_type")
    if injection_type is None:
        return None, None
    if injection_type not in INJECTION_TYPE_KINDS:
        raise ValueError(
            f"checkpoint: {path} metadata names injection_type={injection_type!r}; expected one of "
            f"{list(INJECTION_TYPE_KINDS)}"
        )
    if "inject_layers" not in metadata:
        return injection_type, None
    try:
        layers = json.loads(metadata["inject_layers"])
    except json.JSONDecodeError:
        layers = None
    if not isinstance(layers, list) or not all(isinstance(i, int) and i >= 0 for i in layers):
        raise ValueError(
            f"checkpoint: {path} metadata inject_layers={metadata['inject_layers']!r} is not a JSON list of layer "
            "indices"
        )
    return injection_type, layers


def _injected_scales(
    path: Path, scales: list[float], layers: list[int] | None
) -> tuple[list[float], list[int]]:
    """(the output scales of the injected layers only, those layers): the others are never applied (nor trained)."""
    if not scales:
        return [], []
    if layers is None:
        return scales, list(range(len(scales)))
    if max(layers, default=-1) >= len(scales):
        raise ValueError(
            f"checkpoint: {path} metadata inject_layers={layers} reaches past its {len(scales)} output scales"
        )
    return [scales[i] for i in layers], list(layers)


def _chunks_of(weight: torch.Tensor) -> int:
    """adaLN_modulation predicts num_chunks * D rows and D is not stored: assume DiT's 6 chunks when 6 divides."""
    return 6 if weight.shape[0] % 6 == 0 else 1


def reports_as_dicts(reports: list[InjectorReport]) -> list[dict]:
    return [asdict(r) | {"contribution": r.contribution, "active": r.active} for r in reports]
