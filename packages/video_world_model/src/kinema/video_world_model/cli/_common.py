"""Helpers shared by kinema-wm's subcommands."""

from __future__ import annotations

import argparse

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (local directories only; nothing is downloaded)")
    group.add_argument(
        "--model_dir", required=True, help="Wan2.2-TI2V directory (diffusers or original layout)"
    )
    group.add_argument(
        "--controller", help="trained controller directory (action_train_config.json + weights)"
    )
    group.add_argument(
        "--text_encoder_path", help="transformers UMT5 directory replacing the model's text encoder"
    )
    group.add_argument("--tokenizer_path", help="tokenizer directory replacing the model's tokenizer")
    group.add_argument("--vae_path", help="diffusers AutoencoderKLWan directory replacing the model's VAE")
    group.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weights dtype (default bf16)")
    group.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
