"""VACE-E against plain diffusers VACE at the Wan2.1-VACE-1.3B shape, in one run.

Random bf16 weights (30 layers, width 1536 = 12 heads x 128, FFN 8960, VACE layers 0, 2, ..., 28, 96 control
channels), 480x832x81 -> latents (16, 21, 60, 104) -> 32,760 tokens, batch 1, 512 text tokens.

- forward: plain VACE (diffusers) vs VACE-E (task encoder on, injection at 0,5,10,15,20,25), no grad;
- train step, frozen backbone + gradient checkpointing: plain VACE (gradient to the input latents) vs VACE-E
  (gradient to the task encoder and injectors), eager and with compiled blocks (compile_repeated_blocks);
- peak memory of a full training step (forward, backward, AdamW step) for the dev, LoRA and full configs'
  trainable sets (vace_e; vace_e + LoRA rank 32; the whole transformer + vace_e).

    python benchmarks/vace_e_step.py [--iters 5] [--json OUT]
    python benchmarks/vace_e_step.py --smoke      # tiny CPU shapes: checks the script only
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from _shapes import random_model, timed
from diffusers import WanVACETransformer3DModel

from kinema.video_world_model.loading import add_lora
from kinema.video_world_model.training._train_config import lora_module_names
from kinema.video_world_model.vace_e import TaskEmbodimentEncoder, TaskInputs, VaceETransformer
from kinema.video_world_model.vace_e.testing import TINY_VACE

VACE_1_3B = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "vace_layers": list(range(0, 30, 2)),
    "vace_in_channels": 96,
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--json")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    config = TINY_VACE if args.smoke else VACE_1_3B
    if args.smoke:
        args.iters = 1
    elif not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (or --smoke)", file=sys.stderr)
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    torch.manual_seed(0)
    vace = random_model(WanVACETransformer3DModel, config, device, dtype)
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    layers = "0,5,10,15,20,25" if not args.smoke else "0,2"
    encoder = TaskEmbodimentEncoder(
        dim,
        config["text_dim"],
        1280 if not args.smoke else 16,
        width=512 if not args.smoke else 32,
        layers=2 if not args.smoke else 1,
        heads=8 if not args.smoke else 4,
    )
    model = VaceETransformer(vace, encoder, layers).to(device)
    for module in model.added_modules():
        module.to(dtype)
    frames, h, w = (21, 60, 104) if not args.smoke else (3, 4, 4)
    video_frames = 4 * (frames - 1) + 1
    x = torch.randn(1, config["in_channels"], frames, h, w, device=device, dtype=dtype)
    control = torch.randn(1, config["vace_in_channels"], frames, h, w, device=device, dtype=dtype)
    text = torch.randn(1, 512, config["text_dim"], device=device, dtype=dtype)
    t = torch.tensor([700.0], device=device)
    task = TaskInputs(
        hand_motion=torch.randn(1, video_frames, 20, device=device),
        hand_motion_mask=torch.ones(1, video_frames, dtype=torch.bool, device=device),
        object_trajectory=torch.randn(1, video_frames, 3, 9, device=device),
        object_trajectory_mask=torch.ones(1, video_frames, dtype=torch.bool, device=device),
        object_mask=torch.ones(1, 3, dtype=torch.bool, device=device),
        image_features=torch.randn(1, 1280 if not args.smoke else 16, device=device),
        has_image=torch.ones(1, dtype=torch.bool, device=device),
        prompt_embeds=text,
    )

    def forward_plain():
        with torch.no_grad():
            vace(x, t, text, control_hidden_states=control, return_dict=False)

    def forward_ours():
        with torch.no_grad():
            model(x, t, text, control, task=task)

    def train_plain():
        vace.enable_gradient_checkpointing()
        latents = x.detach().requires_grad_(True)
        vace(latents, t, text, control_hidden_states=control, return_dict=False)[0].float().pow(
            2
        ).mean().backward()
        vace.disable_gradient_checkpointing()

    trainable = [p for m in model.added_modules() for p in m.parameters()]

    def train_ours():
        for p in trainable:
            p.requires_grad_(True)
        model.gradient_checkpointing = True
        model(x, t, text, control, task=task).float().pow(2).mean().backward()
        model.gradient_checkpointing = False
        for p in trainable:
            p.grad = None

    results = {}
    for mode in ("eager", "compiled"):
        if mode == "compiled":
            if args.smoke:
                break
            vace.compile_repeated_blocks(fullgraph=True)
        for name, step in (("forward/plain_vace", forward_plain), ("forward/vace_e", forward_ours),
                           ("train_step/plain_vace", train_plain), ("train_step/vace_e", train_ours)):  # fmt: skip
            seconds, peak = timed(step, args.iters)
            results[f"{mode}/{name}"] = {"seconds": seconds, "peak_gib": peak}
            print(f"{mode}/{name:<24} {seconds:8.4f} s   peak {peak:6.2f} GiB", flush=True)
        for path in ("forward", "train_step"):
            ratio = (
                results[f"{mode}/{path}/vace_e"]["seconds"] / results[f"{mode}/{path}/plain_vace"]["seconds"]
                - 1
            )
            results[f"{mode}/{path}/overhead"] = ratio
            print(f"{mode}/{path}: VACE-E overhead {ratio:+.2%}")

    # peak memory of full steps (forward, backward, AdamW) for the shipped configs' trainable sets
    for block in vace.blocks:
        block._compiled_call_impl = None
    for block in vace.vace_blocks:
        block._compiled_call_impl = None
    setups = {
        "dev (vace_e)": ("vace_e",),
        "lora (vace_e + LoRA r32)": ("vace_e", "lora"),
        "full (dit + vace_e)": ("vace_e", "dit"),
    }
    for label, parts in setups.items():
        if "lora" in parts and not any(".lora_" in n for n, _ in vace.named_parameters()):
            add_lora(vace, 32, lora_module_names("q,k,v,o,ffn.0,ffn.2"))
        model.requires_grad_(False)
        for m in model.added_modules():
            m.requires_grad_(True)
        if "lora" in parts:
            for n, p in vace.named_parameters():
                p.requires_grad_(".lora_" in n)
        if "dit" in parts:
            vace.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5)

        def full_step(optimizer=optimizer):
            model.gradient_checkpointing = True
            model(x, t, text, control, task=task).float().pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds, peak = timed(full_step, max(1, args.iters // 2), warmup=1)
        results[f"memory/{label}"] = {
            "seconds": seconds,
            "peak_gib": peak,
            "trainable_parameters": sum(p.numel() for p in params),
        }
        print(f"memory/{label:<28} {seconds:8.4f} s   peak {peak:6.2f} GiB", flush=True)
        del optimizer
    meta = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
