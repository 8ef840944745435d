"""Tiny random Wan models written in the real on-disk layouts, for this package's tests and other packages'.

Everything is built offline from configs (diffusers' test pattern: 2 layers, 2 heads x 12 dims): a TI2V-style
WanTransformer3DModel, a Wan2.2-style AutoencoderKLWan (residual blocks, 2x2 patchify, 16x spatial), a UMT5
encoder, a word-level tokenizer made with the tokenizers library, and the UniPC flow scheduler.

    model_dir = write_tiny_wan(tmp_path / "wan")                       # diffusers layout (model_index.json)
    controller_dir = write_tiny_controller(tmp_path / "ctrl", "cross_attn_frame")
    pipe = load_pipeline(model_dir, controller_dir, torch_dtype=torch.float32)
    pipe("a drone", image, actions, height=64, width=64, num_frames=9, num_inference_steps=2)

The causal rollout's fixtures build on the same tiny models:

    pipe = tiny_causal_pipeline()                    # 2 latent frames per block, window 4, 2 denoising steps
    noise = tiny_noise(num_frames=6)                 # (1, 6, 4, 4, 4): 3 blocks of 2x2 tokens per frame
    video = pipe.inference(noise, ["a drone flies over hills"], {"action_features": torch.randn(1, 16)})
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from .causal._config import CausalRolloutConfig
from .causal._pipeline import ActionCausalInferencePipeline
from .loading._wan import write_controller_dir
from .modeling._controller import WanActionController
from .modeling._prompt import WanPromptEncoder

TINY_TRANSFORMER = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 4,
    "out_channels": 4,
    "text_dim": 16,
    "freq_dim": 16,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}
TINY_VAE = {
    "base_dim": 8,
    "decoder_base_dim": 8,
    "z_dim": 4,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "latents_mean": [0.1, -0.2, 0.0, 0.3],
    "latents_std": [1.5, 2.0, 0.5, 1.0],
}
TINY_WORDS = [
    "a",
    "drone",
    "flies",
    "over",
    "hills",
    "forward",
    "left",
    "right",
    "the",
    "sea",
    "city",
    "fast",
]
TINY_SIZE = {"height": 64, "width": 64}  # 16x spatial compression, 2x2 patches: 2x2 tokens per latent frame


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer (pad 0, eos 1, unk 2) that appends </s> like T5's, built without any download."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(TINY_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_text_encoder(seed: int = 0) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    config = UMT5Config(
        vocab_size=len(TINY_WORDS) + 3,
        d_model=TINY_TRANSFORMER["text_dim"],
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return UMT5EncoderModel(config).eval()


def tiny_transformer(seed: int = 0, **overrides: Any) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(**(TINY_TRANSFORMER | overrides)).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    torch.manual_seed(seed)
    return AutoencoderKLWan(**TINY_VAE).eval()


def tiny_scheduler() -> UniPCMultistepScheduler:
    """The scheduler of the Wan2.2 diffusers releases: UniPC over flow sigmas with shift 5."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)


def tiny_controller(
    injection_type: str = "cross_attn_frame", seed: int = 0, **overrides: Any
) -> WanActionController:
    """A controller sized for :func:`tiny_transformer` (hidden 24, 2 heads, 2 layers, up to 4 action steps)."""
    torch.manual_seed(seed)
    arguments = {
        "action_dim": 8,
        "hidden_size": TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"],
        "num_heads": TINY_TRANSFORMER["num_attention_heads"],
        "num_latent_frames": 4,
        "num_layers": TINY_TRANSFORMER["num_layers"],
        "injection_type": injection_type,
    }
    return WanActionController(**(arguments | overrides))


def write_tiny_wan(out_dir: str | os.PathLike, layout: str = "diffusers", seed: int = 0) -> Path:
    """Writes a tiny random Wan2.2-TI2V-style model. ``layout``: "diffusers" (model_index.json + component folders,
    via WanPipeline.save_pretrained) or "original" (config.json + diffusion_pytorch_model.safetensors in the
    original Wan key names, the tokenizer in google/umt5-xxl/, and the text encoder in text_encoder/ for
    ``text_encoder_path``). Returns the directory."""
    root = Path(out_dir)
    transformer, vae, text_encoder = tiny_transformer(seed), tiny_vae(seed + 1), tiny_text_encoder(seed + 2)
    tokenizer = tiny_tokenizer()
    if layout == "diffusers":
        pipe = WanPipeline(
            tokenizer, text_encoder, vae, tiny_scheduler(), transformer=transformer, expand_timesteps=True
        )
        pipe.save_pretrained(root, safe_serialization=True)
        return root
    if layout != "original":
        raise ValueError(f"layout: expected 'diffusers' or 'original', got {layout!r}")
    root.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in to_original_wan_keys(transformer.state_dict()).items()}
    save_file(state, str(root / "diffusion_pytorch_model.safetensors"))
    c = TINY_TRANSFORMER
    config = {
        "_class_name": "WanModel",
        "model_type": "ti2v",
        "patch_size": list(c["patch_size"]),
        "dim": c["num_attention_heads"] * c["attention_head_dim"],
        "num_heads": c["num_attention_heads"],
        "in_dim": c["in_channels"],
        "out_dim": c["out_channels"],
        "text_dim": c["text_dim"],
        "freq_dim": c["freq_dim"],
        "ffn_dim": c["ffn_dim"],
        "num_layers": c["num_layers"],
        "eps": 1e-6,
        "text_len": 512,
    }
    (root / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(root / "google" / "umt5-xxl")
    text_encoder.save_pretrained(root / "text_encoder")
    vae.save_pretrained(root / "vae")
    return root


_ORIGINAL_NAMES = [  # diffusers -> original Wan key fragments (the inverse of diffusers' conversion)
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn2", "cross_attn"),
    ("attn1", "self_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("norm2", "norm3"),  # diffusers' cross-attention norm is the original norm3
    ("proj_out", "head.head"),
]


def to_original_wan_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers WanTransformer3DModel state dict in the original Wan key names."""
    out = {}
    for key, value in state.items():
        new = key
        for old, original in _ORIGINAL_NAMES:
            new = new.replace(old, original)
        if new == "scale_shift_table":
            new = "head.modulation"
        elif new.endswith(".scale_shift_table"):
            new = new.removesuffix("scale_shift_table") + "modulation"
        out[new] = value
    return out


def write_tiny_controller(
    out_dir: str | os.PathLike,
    injection_type: str = "cross_attn_frame",
    seed: int = 0,
    scale: float | None = 0.5,
    **overrides: Any,
) -> Path:
    """A trained-controller directory (action_train_config.json + action_controller.safetensors) for the tiny model.

    ``scale`` sets every output scale (0.5 makes the actions visibly matter; None keeps the initial scale)."""
    controller = tiny_controller(injection_type, seed, **overrides)
    if scale is not None:
        with torch.no_grad():
            controller.output_scale.fill_(scale)
    return write_controller_dir(out_dir, controller, base_model="tiny-wan")


# The causal rollout's tiny fixtures, over the tiny models above.
TINY_CAUSAL_CONFIG = CausalRolloutConfig(
    block_size=2,
    window_frames=4,
    denoising_steps=(1000, 500),
    height=64,
    width=64,
    num_blocks=3,
    max_sequence_length=8,
)
TINY_ACTION_DIM = 16


def tiny_causal_pipeline(
    config: CausalRolloutConfig | None = None,
    action_module: nn.Module | None = None,
    action_dim: int = TINY_ACTION_DIM,
    seed: int = 0,
    vae: bool = True,
    **config_changes,
) -> ActionCausalInferencePipeline:
    """A CPU float32 pipeline on the tiny transformer (2 layers, hidden 24), tiny VAE and tiny UMT5 encoder."""
    config = dataclasses.replace(config or TINY_CAUSAL_CONFIG, **config_changes)
    return ActionCausalInferencePipeline(
        config,
        "cpu",
        generator=tiny_transformer(seed),
        text_encoder=WanPromptEncoder(
            tiny_tokenizer(), tiny_text_encoder(seed + 2), config.max_sequence_length
        ),
        vae=tiny_vae(seed + 1) if vae else None,
        action_module=action_module,
        action_dim=action_dim,
    )


def randomize_projection(pipeline: ActionCausalInferencePipeline, std: float = 0.5, seed: int = 0) -> None:
    """Gives the zero-initialized action projection random weights, as if trained, so actions visibly matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in pipeline.action_projection.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def tiny_noise(num_frames: int = 6, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """(B, F, C, h, w) = (batch, num_frames, 4, 4, 4) noise for the tiny model at 64x64."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_frames, TINY_TRANSFORMER["in_channels"], 4, 4, generator=generator)


__all__ = [
    "TINY_CAUSAL_CONFIG",
    "TINY_SIZE",
    "TINY_TRANSFORMER",
    "TINY_VAE",
    "randomize_projection",
    "tiny_causal_pipeline",
    "tiny_controller",
    "tiny_noise",
    "tiny_scheduler",
    "tiny_text_encoder",
    "tiny_tokenizer",
    "tiny_transformer",
    "tiny_vae",
    "to_original_wan_keys",
    "write_tiny_controller",
    "write_tiny_wan",
]
