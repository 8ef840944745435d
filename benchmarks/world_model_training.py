"""`kinema-wm train`'s whole step against the model-only step, and its data wait, at the Wan2.2-TI2V-5B shape.

Random weights (transformer bf16 at the 5B shape; the Wan2.2 VAE at its real config; a one-layer UMT5 of width
4096 standing in for UMT5-XXL, whose cost is not what is measured), batch 1, 480x832x81, gradient checkpointing,
controller-only training (wan_ti2v_5b: cross_attn_frame in all 30 layers), eager blocks.

- model-only: forward + backward + optimizer step of the training module on a batch already on the GPU;
- cached: the real trainer (`WorldModelTrainer`) reading a latent cache written by this script;
- video: the real trainer decoding 480x832x81 mp4s in DataLoader workers (VAE + text encoder on the GPU);
  its "data wait" is the time the loop waits for the next batch.

    python benchmarks/world_model_training.py --steps 12 --workers 12 --json OUT.json
    accelerate launch --num_processes 2 benchmarks/world_model_training.py --modes cached --steps 12 --save
    python benchmarks/world_model_training.py --modes cached --resume   # continue that 2-GPU checkpoint on 1 GPU
    python benchmarks/world_model_training.py --smoke                    # tiny CPU shapes: checks the script only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from _shapes import WAN_TI2V_5B, random_model
from accelerate import Accelerator
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from safetensors.torch import save_file
from transformers import UMT5Config, UMT5EncoderModel

from kinema.robot_data.testing import write_action_video_dataset
from kinema.video_world_model.loading._wan import WAN22_VAE_CONFIG
from kinema.video_world_model.testing import TINY_TRANSFORMER, TINY_VAE, tiny_tokenizer
from kinema.video_world_model.training import TrainConfig, WorldModelTrainer
from kinema.video_world_model.training._train_data import CACHE_FORMAT, CACHE_INDEX


def components(smoke: bool, device: torch.device) -> dict:
    torch.manual_seed(0)
    transformer_config = (
        TINY_TRANSFORMER if smoke else TINY_TRANSFORMER | WAN_TI2V_5B | {"rope_max_seq_len": 1024}
    )
    transformer = random_model(
        WanTransformer3DModel, transformer_config, device, torch.float32 if smoke else torch.bfloat16
    ).requires_grad_(True)
    with device:
        vae = AutoencoderKLWan(
            **(
                TINY_VAE
                if smoke
                else WAN22_VAE_CONFIG | {"latents_mean": [0.0] * 48, "latents_std": [1.0] * 48}
            )
        )
    width = transformer_config["text_dim"]
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=64, d_model=width, d_kv=64, d_ff=2 * width, num_layers=1, num_heads=width // 64 or 1,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    ).to(device)  # fmt: skip
    return {
        "transformer": transformer,
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tiny_tokenizer(),
        "scheduler": UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
        ),
    }


def write_random_cache(
    root: Path, samples: int, channels: int, frames: int, h: int, w: int, text_dim: int
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if (root / CACHE_INDEX).exists():
        return root
    shard, rows = {}, []
    for i in range(samples):
        key = f"{i:06d}"
        shard[f"{key}.latents"] = torch.randn(channels, frames, h, w, dtype=torch.bfloat16)
        shard[f"{key}.prompt_embeds"] = torch.randn(512, text_dim, dtype=torch.bfloat16)
        rows.append({"shard": "shard-00000.safetensors", "key": key, "prompt": "a drone", "row": key,
                     "action_binary": torch.randint(0, 2, (frames - 1, 8)).float().tolist(),
                     "action_magnitude": torch.rand(frames - 1, 8).tolist()})  # fmt: skip
    save_file(shard, str(root / "shard-00000.safetensors"))
    index = {
        "format": CACHE_FORMAT,
        "version": 1,
        "action_magnitude_scale": [100.0] * 4 + [1.0] * 4,
        "rows": rows,
    }
    (root / CACHE_INDEX).write_text(json.dumps(index))
    return root


def summary(result, skip: int) -> dict:
    steps = result.step_seconds[skip:] or result.step_seconds
    waits = result.data_wait_seconds[skip:] or result.data_wait_seconds
    return {
        "step_s_median": statistics.median(steps),
        "data_wait_share": sum(waits) / sum(steps),
        "steps_timed": len(steps),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", default="model_only,cached,video")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--work_dir", default=".bench/wm_training")
    parser.add_argument("--save", action="store_true", help="save a full checkpoint at the end (cached mode)")
    parser.add_argument("--resume", action="store_true", help="resume the cached run's latest checkpoint")
    parser.add_argument("--json")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.workers, args.clips = 3, 0, 2
    elif not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (or --smoke)", file=sys.stderr)
        return 1
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    size = (64, 64, 5) if args.smoke else (480, 832, 81)
    height, width, frames = size
    work = Path(args.work_dir)
    parts = components(args.smoke, accelerator.device)
    config_values = {
        "model_dir": "(in memory)",
        "height": height,
        "width": width,
        "num_frames": frames,
        "max_pixels": None,
        "dataset_num_workers": args.workers,
        "mixed_precision": "bf16" if torch.cuda.is_available() else "no",
        "max_steps": args.steps,
        "save_steps": 10**9,
        "log_steps": 1,
        "learning_rate": 1e-4,
        "seed": 0,
    }
    results: dict[str, dict] = {"processes": accelerator.num_processes}
    latent = (parts["transformer"].config.in_channels, (frames - 1) // 4 + 1, height // 16, width // 16)
    skip = 2 if not args.smoke else 0

    if "model_only" in args.modes and not args.resume:
        cache = write_random_cache(work / "cache", 4, *latent, parts["transformer"].config.text_dim)
        trainer = WorldModelTrainer(
            TrainConfig(**config_values, cache_dir=str(cache), output_path=str(work / "model_only")),
            accelerator=accelerator,
            components=parts,
        )
        trainer._build()
        from kinema.video_world_model.training._train_data import CachedLatentDataset, collate

        batch = collate([CachedLatentDataset(cache)[0]])
        batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        times = []
        for i in range(args.steps):
            start = time.perf_counter()
            with accelerator.autocast():
                loss = trainer.module(batch, torch.Generator(device=accelerator.device).manual_seed(i))
            accelerator.backward(loss)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.item()
            times.append(time.perf_counter() - start)
        results["model_only"] = {"step_s_median": statistics.median(times[skip:] or times)}
        print("model_only", results["model_only"], flush=True)

    if "cached" in args.modes:
        cache = write_random_cache(work / "cache", 16, *latent, parts["transformer"].config.text_dim)
        output = work / "cached_run"
        values = config_values | {
            "cache_dir": str(cache),
            "output_path": str(output),
            "save_full_state": args.save or args.resume,
        }
        if args.resume:
            values |= {"resume_from": "latest", "max_steps": args.steps + 4}
        elif output.exists():
            import shutil

            shutil.rmtree(output)
        result = WorldModelTrainer(TrainConfig(**values), accelerator=accelerator, components=parts).run()
        results["cached"] = summary(result, skip if not args.resume else 0) | {
            "first_step": min(result.losses),
            "last_step": result.step,
        }
        print("cached", results["cached"], flush=True)

    if "video" in args.modes and not args.resume:
        data = work / "clips"
        if not (data / "metadata.csv").exists():
            if accelerator.is_main_process:
                write_action_video_dataset(
                    data, num_clips=args.clips, num_frames=frames, height=height, width=width
                )
            accelerator.wait_for_everyone()
        output = work / "video_run"
        if output.exists() and accelerator.is_main_process:
            import shutil

            shutil.rmtree(output)
        accelerator.wait_for_everyone()
        config = TrainConfig(**config_values, dataset_base_path=str(data), output_path=str(output))
        result = WorldModelTrainer(config, accelerator=accelerator, components=parts).run()
        results["video"] = summary(result, skip)
        print("video", results["video"], flush=True)

    if "model_only" in results and "cached" in results:
        results["cached_vs_model_only"] = (
            results["cached"]["step_s_median"] / results["model_only"]["step_s_median"] - 1
        )
    meta = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    if accelerator.is_main_process:
        print(json.dumps({"meta": meta, "results": results}))
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
