"""Loading Wan components and trained action controllers from local directories (never the network).

Model directories, either layout:

- diffusers: ``model_index.json`` with ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``;
- the original Wan release: ``config.json`` + ``diffusion_pytorch_model*.safetensors`` (converted with diffusers'
  own key mapping), ``Wan2.2_VAE.pth`` (read with ``torch.load(weights_only=True)`` and diffusers' VAE key mapping,
  where that mapping covers it), ``models_t5_umt5-xxl-enc-bf16.pth`` (diffusers and transformers cannot read this
  file: pass ``text_encoder_path`` to a transformers UMT5 directory) and ``google/umt5-xxl/`` (the tokenizer).

Controllers, wherever training or saving left them:

- a controller folder: ``action_train_config.json`` + ``action_controller.safetensors`` (+ ``lora.safetensors``), as
  ``kinema-wm train`` and the reference design's train_action.py write them (the reference's LoRA keys are
  DiffSynth's, read through diffusers' Wan LoRA converter);
- a training checkpoint (``<run>/checkpoints/step-*/``, or its ``trainable.safetensors``), with the run's
  ``action_train_config.json`` two folders up;
- ``save_pretrained``'s layout: a ``config.json`` folder (``WanActionController.save_pretrained``), or a saved
  :class:`WanActionPipeline` (its ``action_controller/`` is loaded with it).

The base model may come from the controller's config when no model directory is given: kinema writes ``base_model``,
the reference ``base_model_id``; either must be a local directory (nothing is downloaded).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKLWan, SchedulerMixin, UniPCMultistepScheduler, WanTransformer3DModel
from diffusers.loaders.single_file_utils import (
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, UMT5EncoderModel

from .._atomic import write_atomic
from ..modeling._controller import ACTION_CONTROLLER_CONFIGS, WanActionController
from ..pipelines._pipeline import WanActionPipeline
from ._checkpoint import checkpoint_weights, split_trainable
from ._lora import diffusers_lora_state

TRAIN_CONFIG = "action_train_config.json"
CONTROLLER_WEIGHTS = "action_controller.safetensors"
LORA_WEIGHTS = "lora.safetensors"
DIFFUSERS_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
WAN22_VAE_CONFIG = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
}


class ModelFileError(FileNotFoundError):
    """A model or controller directory lacks a file it needs; the message names the file."""


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ModelFileError(f"{what}: {path} does not exist")
    return path


def detect_layout(model_dir: str | os.PathLike) -> str:
    """'diffusers' (model_index.json) or 'original' (diffusion_pytorch_model*.safetensors); else a clear error."""
    root = _require(Path(model_dir), "model_dir")
    if (root / "model_index.json").is_file():
        return "diffusers"
    if any(root.glob("diffusion_pytorch_model*.safetensors")):
        return "original"
    raise ModelFileError(
        f"model_dir: {root} holds neither model_index.json (diffusers layout) nor "
        "diffusion_pytorch_model*.safetensors (original Wan layout)"
    )


def _load_diffusers_components(
    root: Path, dtype: torch.dtype, transformer_cls=WanTransformer3DModel
) -> dict[str, Any]:
    for name in DIFFUSERS_COMPONENTS:
        _require(root / name, f"model_dir component {name!r}")
    scheduler_config = json.loads(
        _require(root / "scheduler" / "scheduler_config.json", "scheduler").read_text()
    )
    scheduler_cls = getattr(diffusers, scheduler_config.get("_class_name", ""), None)
    if scheduler_cls is None or not issubclass(scheduler_cls, SchedulerMixin):
        raise ValueError(
            f"scheduler: unknown class {scheduler_config.get('_class_name')!r} in {root / 'scheduler'}"
        )
    local = {"local_files_only": True}
    return {
        "transformer": transformer_cls.from_pretrained(
            root, subfolder="transformer", torch_dtype=dtype, **local
        ),
        "vae": AutoencoderKLWan.from_pretrained(root, subfolder="vae", torch_dtype=torch.float32, **local),
        "text_encoder": UMT5EncoderModel.from_pretrained(
            root, subfolder="text_encoder", dtype=dtype, **local
        ),
        "tokenizer": AutoTokenizer.from_pretrained(root, subfolder="tokenizer", **local),
        "scheduler": scheduler_cls.from_pretrained(root, subfolder="scheduler", **local),
    }


def _original_transformer_config(root: Path) -> dict[str, Any]:
    """The original Wan config.json -> WanTransformer3DModel arguments (Wan2.2-TI2V-5B values where absent)."""
    raw = json.loads(_require(root / "config.json", "original Wan config").read_text())
    dim, heads = raw.get("dim", 3072), raw.get("num_heads", 24)
    return {
        "patch_size": tuple(raw.get("patch_size", (1, 2, 2))),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": raw.get("in_dim", 48),
        "out_channels": raw.get("out_dim", 48),
        "text_dim": raw.get("text_dim", 4096),
        "freq_dim": raw.get("freq_dim", 256),
        "ffn_dim": raw.get("ffn_dim", 14336),
        "num_layers": raw.get("num_layers", 30),
        "eps": raw.get("eps", 1e-6),
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
    }


def _load_original_components(
    root: Path,
    dtype: torch.dtype,
    text_encoder_path: Path | None,
    tokenizer_path: Path | None,
    vae_path: Path | None,
) -> dict[str, Any]:
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(root.glob("diffusion_pytorch_model*.safetensors")):
        state.update(load_file(str(shard)))
    transformer = WanTransformer3DModel(**_original_transformer_config(root))
    converted = convert_wan_transformer_to_diffusers(state)
    missing, unexpected = transformer.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"original transformer in {root}: diffusers' key mapping left missing keys {missing[:5]} and "
            f"unexpected keys {unexpected[:5]}"
        )
    if vae_path is not None:
        vae = AutoencoderKLWan.from_pretrained(
            _require(vae_path, "vae_path"), torch_dtype=torch.float32, local_files_only=True
        )
    else:
        vae = _original_vae(_require(root / "Wan2.2_VAE.pth", "original Wan VAE"))
    if text_encoder_path is None:
        raise ModelFileError(
            f"text encoder: {root / 'models_t5_umt5-xxl-enc-bf16.pth'} is in the original T5 format, which neither "
            "diffusers nor transformers reads; pass text_encoder_path (--text_encoder_path) to a transformers "
            "UMT5 directory"
        )
    tokenizer_dir = tokenizer_path or root / "google" / "umt5-xxl"
    return {
        "transformer": transformer.to(dtype),
        "vae": vae,
        "text_encoder": UMT5EncoderModel.from_pretrained(
            _require(Path(text_encoder_path), "text_encoder_path"), dtype=dtype, local_files_only=True
        ),
        "tokenizer": AutoTokenizer.from_pretrained(
            _require(tokenizer_dir, "tokenizer"), local_files_only=True
        ),
        "scheduler": UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
        ),
    }


def load_diffusers_components(
    model_dir: str | os.PathLike,
    transformer_cls,
    torch_dtype: torch.dtype = torch.bfloat16,
    text_encoder_path: str | os.PathLike | None = None,
    tokenizer_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Components of a diffusers-layout Wan-family model whose transformer class is ``transformer_cls`` (e.g.
    ``WanVACETransformer3DModel``); text encoder and tokenizer replaceable as in :func:`load_wan_components`."""
    root = _require(Path(model_dir), "model_dir")
    if not (root / "model_index.json").is_file():
        raise ModelFileError(
            f"model_dir: {root} holds no model_index.json (the diffusers layout is required here)"
        )
    components = _load_diffusers_components(root, torch_dtype, transformer_cls)
    if text_encoder_path is not None:
        components["text_encoder"] = UMT5EncoderModel.from_pretrained(
            _require(Path(text_encoder_path), "text_encoder_path"), dtype=torch_dtype, local_files_only=True
        )
    if tokenizer_path is not None:
        components["tokenizer"] = AutoTokenizer.from_pretrained(
            _require(Path(tokenizer_path), "tokenizer_path"), local_files_only=True
        )
    return components


def _original_vae(vae_file: Path) -> AutoencoderKLWan:
    vae = AutoencoderKLWan(**WAN22_VAE_CONFIG)
    vae_state = convert_wan_vae_to_diffusers(torch.load(vae_file, map_location="cpu", weights_only=True))
    missing, unexpected = vae.load_state_dict(vae_state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{vae_file}: diffusers' single-file Wan VAE key mapping does not cover this checkpoint "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys); pass vae_path (--vae_path) to a VAE in the "
            "diffusers layout (a folder with config.json and diffusion_pytorch_model.safetensors)"
        )
    return vae


def load_wan_components(
    model_dir: str | os.PathLike,
    torch_dtype: torch.dtype = torch.bfloat16,
    text_encoder_path: str | os.PathLike | None = None,
    tokenizer_path: str | os.PathLike | None = None,
    vae_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """transformer, vae (fp32), text_encoder, tokenizer, scheduler from a local directory in either layout.

    ``text_encoder_path`` / ``tokenizer_path`` / ``vae_path`` replace those components (transformers / diffusers
    directories)."""
    root = Path(model_dir)
    if detect_layout(root) == "diffusers":
        components = _load_diffusers_components(root, torch_dtype)
        if text_encoder_path is not None:
            components["text_encoder"] = UMT5EncoderModel.from_pretrained(
                _require(Path(text_encoder_path), "text_encoder_path"),
                dtype=torch_dtype,
                local_files_only=True,
            )
        if tokenizer_path is not None:
            components["tokenizer"] = AutoTokenizer.from_pretrained(
                _require(Path(tokenizer_path), "tokenizer_path"), local_files_only=True
            )
        if vae_path is not None:
            components["vae"] = AutoencoderKLWan.from_pretrained(
                _require(Path(vae_path), "vae_path"), torch_dtype=torch.float32, local_files_only=True
            )
        return components

    def optional(path):
        return Path(path) if path is not None else None

    return _load_original_components(
        root, torch_dtype, optional(text_encoder_path), optional(tokenizer_path), optional(vae_path)
    )


def read_train_config(controller_dir: str | os.PathLike) -> dict[str, Any]:
    return _read_train_config_file(_require(Path(controller_dir) / TRAIN_CONFIG, "controller"))


def _read_train_config_file(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg})") from None
    if "action_controller_config" not in config:
        raise ValueError(f"{path}: lacks 'action_controller_config'")
    return config


def controller_from_config(config: dict[str, Any]) -> WanActionController:
    """A controller from an ``action_train_config.json`` dict (preset name or full config; the top-level
    ``action_magnitude_scale`` wins, so training and inference use the same scale)."""
    spec = config["action_controller_config"]
    arguments = dict(ACTION_CONTROLLER_CONFIGS[spec]) if isinstance(spec, str) else dict(spec)
    if "action_magnitude_scale" in config:
        arguments["magnitude_scale"] = config["action_magnitude_scale"]
    if arguments.get("initial_scale") is None:
        arguments["initial_scale"] = 0.0  # only the init value; the trained output_scale is loaded over it
    known = list(inspect.signature(WanActionController.__init__).parameters)[1:]
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise ValueError(
            f"action_controller_config: unknown keys {unknown}; expected some of {sorted(known)}"
        )
    return WanActionController(**arguments)


def load_controller(controller_dir: str | os.PathLike) -> tuple[WanActionController, dict[str, Any]]:
    """(controller with trained weights, the train config) from a controller folder, a training checkpoint (its
    folder or its trainable.safetensors) or ``save_pretrained``'s folder (see the module docstring)."""
    root = Path(controller_dir)
    checkpoint = checkpoint_weights(root)
    if checkpoint is not None and not (root / CONTROLLER_WEIGHTS).is_file():
        config = _read_train_config_file(_checkpoint_config(checkpoint))
        controller = controller_from_config(config)
        controller.load_reference_state_dict(split_trainable(load_file(str(checkpoint)))[0])
        return controller, config
    if (root / "config.json").is_file() and not (root / TRAIN_CONFIG).is_file():
        controller = WanActionController.from_pretrained(root)
        scale = controller.arguments["magnitude_scale"]
        return controller, {"action_controller_config": controller.arguments, "action_magnitude_scale": scale}
    config = read_train_config(root)
    controller = controller_from_config(config)
    weights = _require(root / CONTROLLER_WEIGHTS, "controller weights")
    _check_scheme(weights, controller)
    controller.load_reference_state_dict(load_file(str(weights)))
    return controller, config


def _checkpoint_config(weights: Path) -> Path:
    """The action_train_config.json of a checkpoint: beside it, or in its run's folder (<run>/checkpoints/step-*/)."""
    candidates = [weights.parent / TRAIN_CONFIG, weights.parent.parent.parent / TRAIN_CONFIG]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelFileError(
        f"controller: {weights} is a training checkpoint, but neither {candidates[0]} nor {candidates[1]} (its run's "
        "folder) exists"
    )


def _scheme(controller: WanActionController) -> dict[str, str]:
    """How a controller injects, stored in its safetensors metadata: the weights alone cannot tell injection types
    apart (every head exists in every type)."""
    return {
        "injection_type": controller.injection_type,
        "inject_layers": json.dumps(list(controller.inject_layers)),
        "action_window": str(controller.action_window),
    }


def _check_scheme(weights: Path, controller: WanActionController) -> None:
    with safe_open(str(weights), framework="pt") as f:
        saved = f.metadata() or {}
    for key, expected in _scheme(controller).items():
        if (
            key in saved and saved[key] != expected
        ):  # reference checkpoints carry no metadata: nothing to compare
            raise ValueError(
                f"{weights}: trained with {key}={saved[key]}, but {TRAIN_CONFIG} asks for {key}={expected}"
            )


def apply_lora(
    pipeline: WanActionPipeline, controller_dir: str | os.PathLike, config: dict[str, Any]
) -> bool:
    """Loads the LoRA into the transformer through diffusers' LoRA loader when the train config names one: the
    folder's ``lora.safetensors``, or a checkpoint's LoRA tensors (in its trainable.safetensors). kinema's keys,
    diffusers' and DiffSynth's are read (:func:`~kinema.video_world_model.loading._lora.diffusers_lora_state`); errors name
    the file. Returns whether a LoRA was applied."""
    lora = config.get("lora") or {}
    if not lora.get("lora_base_model"):  # the reference writes a rank even when no LoRA was trained
        return False
    checkpoint = checkpoint_weights(controller_dir)
    if checkpoint is not None and not (Path(controller_dir) / CONTROLLER_WEIGHTS).is_file():
        path, raw = checkpoint, split_trainable(load_file(str(checkpoint)))[1]
    else:
        path = _require(Path(controller_dir) / LORA_WEIGHTS, "LoRA weights named by the train config")
        raw = load_file(str(path))
    state = diffusers_lora_state(raw, str(path))
    expected = sum(".lora_" in key for key in state)

    def loaded() -> int:
        return sum(".lora_" in name for name, _ in pipeline.transformer.named_parameters())

    before = loaded()
    try:
        pipeline.load_lora_weights(state, adapter_name="action")
    except (ValueError, RuntimeError, KeyError) as error:  # peft's messages name modules, never the file
        raise ValueError(
            f"{path}: the LoRA does not fit the transformer ({type(error).__name__}: {error})"
        ) from error
    if loaded() - before != expected:
        raise ValueError(
            f"{path}: {expected} LoRA tensors, of which {loaded() - before} found a module of the transformer "
            "(keys for modules it lacks?)"
        )
    return True


def base_model_dir(config: dict[str, Any], source: str | os.PathLike) -> Path:
    """The local base model a controller's config names: ``base_model`` (kinema: the --model_dir it trained with) or
    ``base_model_id`` (the reference: a Hub id such as Wan-AI/Wan2.2-TI2V-5B), whichever is a local directory."""
    named = [(key, config[key]) for key in ("base_model", "base_model_id") if config.get(key)]
    for _, value in named:
        if Path(value).is_dir():
            return Path(value)
    if not named:
        raise ModelFileError(
            f"model_dir: not given, and the controller's {TRAIN_CONFIG} ({source}) names no base_model or "
            "base_model_id"
        )
    found = ", ".join(f"{key} {value!r}" for key, value in named)
    raise ModelFileError(
        f"model_dir: not given, and {found} in the controller's {TRAIN_CONFIG} ({source}) is not a local directory "
        "(nothing is downloaded); pass model_dir (--model_dir) to a local copy of that model"
    )


def load_pipeline(
    model_dir: str | os.PathLike | None,
    controller_dir: str | os.PathLike | None = None,
    torch_dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device | None = None,
    text_encoder_path: str | os.PathLike | None = None,
    tokenizer_path: str | os.PathLike | None = None,
    vae_path: str | os.PathLike | None = None,
) -> WanActionPipeline:
    """The whole pipeline from local directories: the base model and, optionally, a trained controller (+ LoRA)
    from anything :func:`load_controller` reads. ``model_dir`` None: the base model the controller's config names
    (:func:`base_model_dir`). A saved :class:`WanActionPipeline` brings its own controller unless ``controller_dir``
    names another."""
    controller, config = (None, {}) if controller_dir is None else load_controller(controller_dir)
    if model_dir is None:
        if controller_dir is None:
            raise ModelFileError(
                "model_dir: not given, and no controller whose config could name the base model"
            )
        model_dir = base_model_dir(config, controller_dir)
    if controller is None and _saved_controller(Path(model_dir)):
        controller, config = load_controller(Path(model_dir) / "action_controller")
    components = load_wan_components(model_dir, torch_dtype, text_encoder_path, tokenizer_path, vae_path)
    pipeline = WanActionPipeline(action_controller=controller, **components)
    if controller_dir is not None:
        apply_lora(pipeline, controller_dir, config)
    if controller is not None and controller.dtype != torch_dtype:
        controller.to(dtype=torch_dtype)
    if device is not None:
        pipeline.to(device)
    return pipeline


def _saved_controller(model_dir: Path) -> bool:
    """Whether ``model_dir`` is a saved WanActionPipeline with a controller (model_index.json names one)."""
    index = model_dir / "model_index.json"
    if not index.is_file():
        return False
    entry = json.loads(index.read_text()).get("action_controller")
    return isinstance(entry, list) and entry[0] is not None


def write_controller_dir(
    out_dir: str | os.PathLike,
    controller: WanActionController,
    *,
    base_model: str,
    lora: dict[str, Any] | None = None,
    lora_state: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes action_train_config.json, action_controller.safetensors (and lora.safetensors), each atomically."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "base_model": base_model,
        "action_controller_config": controller.arguments,
        "action_magnitude_scale": controller.arguments["magnitude_scale"],
        "lora": lora or {},
    } | (extra or {})
    state = {k: v.detach().to("cpu").contiguous() for k, v in controller.state_dict().items()}
    write_atomic(
        root / CONTROLLER_WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata=_scheme(controller))
    )
    if lora_state:
        lora_cpu = {k: v.detach().to("cpu").contiguous() for k, v in lora_state.items()}
        write_atomic(root / LORA_WEIGHTS, lambda tmp: save_file(lora_cpu, str(tmp)))
    write_atomic(root / TRAIN_CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2)))
    return root
