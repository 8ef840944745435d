"""The design sweeps behind the drone experiment's presets (results/drone_design_sweeps.json, RESULTS.md): which
settings make a Wan transformer + action controller trained from scratch follow the actions.

  python experiments/drone_design_sweep.py prep --frames 9 --train 1024 --test 128 --contrast 3 --work W
  python experiments/drone_design_sweep.py run --work W --name tp1 --tpatch 1 --heads 3 --head_dim 64 \
      --lr 2e-3 --inj wan_ti2v_5b_adaln --steps 600 --eval_every 300 --out OUT

The same classes as `kinema-wm drone-experiment` (WanTransformer3DModel, WanActionController, WanActionTransformer,
FlowMatchingObjective, PixelLatentSpace, generate_latents, ActionEstimator) with an in-memory training loop and
in-memory scoring (no mp4 round trip), for many short runs side by side; the presets were then measured with the
package's own pipeline. Exploration flags not in the package: --concat (the first frame as extra input channels),
--down (downsample the clips), --cfg_drop / --guidance (action dropout and guidance).
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def prep(a):
    from kinema.robot_data import read_video_frames
    from kinema.robot_data.drone import DroneDataConfig, make_drone_dataset
    from kinema.video_world_model.drone._eval import read_dataset_actions

    w = Path(a.work)
    t0 = time.time()
    for name, clips, seed in (("train", a.train, 0), ("test", a.test, 1)):
        if not (w / name / "drone_data.json").is_file():
            make_drone_dataset(
                DroneDataConfig(
                    out=str(w / name),
                    clips=clips,
                    height=a.size,
                    width=a.size,
                    frames=a.frames,
                    seed=seed,
                    workers=a.workers,
                    texture_size=a.texture,
                    grid=a.grid,
                    contrast=a.contrast,
                ),
                overwrite=True,
                progress=False,
            )
        print(f"rendered {name} {time.time() - t0:.0f}s", flush=True)
        rows = read_dataset_actions(w / name)
        v = torch.stack(
            [torch.from_numpy(read_video_frames(rows.root / x)).permute(3, 0, 1, 2) for x in rows.videos]
        )
        if a.down > 1:
            v = torch.nn.functional.avg_pool3d(v.float(), (1, a.down, a.down)).round().to(torch.uint8)
        torch.save(
            {
                "videos": v,
                "binary": torch.from_numpy(rows.binary),
                "magnitude": torch.from_numpy(rows.magnitude),
            },
            w / f"{name}.pt",
        )
    import multiprocessing

    from kinema.video_world_model.drone._estimator import ActionEstimator, EstimatorConfig, step_targets

    tr = torch.load(w / "train.pt")
    # spawn, not fork: the parent may hold an EGL context from the renderer check, and forked workers then hung
    # (seen on the GPU machine: a 10-minute call that returned nothing)
    with multiprocessing.get_context("spawn").Pool(a.workers) as pool:
        feats = pool.map(_feat, [x.permute(1, 2, 3, 0).numpy() for x in tr["videos"]])
    act, mot = zip(*[step_targets(b, m) for b, m in zip(tr["binary"].numpy(), tr["magnitude"].numpy())])
    ActionEstimator.fit(
        np.concatenate(feats), np.concatenate(act), np.concatenate(mot), EstimatorConfig(), steps=3000
    ).save(w / "estimator")
    print(f"prep done {time.time() - t0:.0f}s", flush=True)


def _feat(frames):
    import cv2

    cv2.setNumThreads(1)
    from kinema.video_world_model.drone._estimator import step_features

    return step_features(frames)


def run(a):
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    from diffusers import WanTransformer3DModel

    from kinema.video_world_model.drone import score_actions
    from kinema.video_world_model.drone._estimator import ActionEstimator
    from kinema.video_world_model.drone._metric import derangement
    from kinema.video_world_model.drone._model import generate_latents, prompt_embedding
    from kinema.video_world_model.modeling import (
        ACTION_CONTROLLER_CONFIGS,
        FlowMatchingObjective,
        PixelLatentSpace,
        WanActionController,
        WanActionTransformer,
    )

    cv2.setNumThreads(1)
    torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    w = Path(a.work)
    t0 = time.time()
    tr, te = torch.load(w / "train.pt"), torch.load(w / "test.pt")
    est = ActionEstimator.load(w / "estimator")
    space = PixelLatentSpace.fit(tr["videos"][:64].float() / 127.5 - 1, patch=a.patch)
    lat = space.encode(tr["videos"]).to(dev)  # (N, C, F, h, w)
    tb, tm = tr["binary"].to(dev), tr["magnitude"].to(dev)
    n = min(a.ntest, len(te["videos"]))
    te_v, te_b, te_m = te["videos"][:n], te["binary"][:n], te["magnitude"][:n]
    te_first = space.encode(te_v[:, :, :1]).to(dev)
    pool = ThreadPoolExecutor(a.threads)

    def score(videos, b, m):
        res = list(pool.map(lambda v: est.estimate(v.permute(1, 2, 3, 0).numpy()), list(videos)))
        return score_actions(
            b.numpy(), m.numpy(), np.stack([r[0] for r in res]), np.stack([r[1] for r in res])
        )

    gt = score(te_v, te_b, te_m)
    perm = torch.from_numpy(derangement(n, seed=0))
    gt_shuf = score(te_v, te_b[perm], te_m[perm])
    torch.manual_seed(a.seed)
    C = space.channels
    tf = WanTransformer3DModel(
        patch_size=(1, a.tpatch, a.tpatch),
        num_attention_heads=a.heads,
        attention_head_dim=a.head_dim,
        in_channels=2 * C if a.concat else C,
        out_channels=C,
        text_dim=16,
        freq_dim=64,
        ffn_dim=a.ffn,
        num_layers=a.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    )
    cargs = dict(ACTION_CONTROLLER_CONFIGS[a.inj])
    cargs.update(
        hidden_size=a.heads * a.head_dim,
        num_heads=a.heads,
        num_layers=a.layers,
        num_latent_frames=tb.shape[1],
        initial_scale=a.init_scale,
        action_window=a.window,
    )
    ctrl = WanActionController(**cargs)
    model = WanActionTransformer(tf, ctrl).to(dev)
    obj = FlowMatchingObjective(shift=a.shift)
    tpf = (lat.shape[3] // a.tpatch) * (lat.shape[4] // a.tpatch)

    class Wrapped(torch.nn.Module):  # what generate_latents calls: returns the flow v
        def __init__(self):
            super().__init__()
            self.controller, self.transformer = ctrl, tf

        dtype = property(lambda self: model.dtype)
        device = property(lambda self: model.device)
        guidance = 1.0

        def forward(self, x, t, text, b, m):
            xin = torch.cat([x, x[:, :, :1].expand_as(x)], 1) if a.concat else x
            with torch.autocast(dev.type, torch.bfloat16, enabled=a.bf16 and dev.type == "cuda"):
                out = model(xin, t, text, b, m).float()
                if self.guidance != 1.0:
                    if a.uncond == "none":
                        unc = model(xin, t, text, None, None).float()
                    else:
                        unc = model(xin, t, text, b * 0, m * 0).float()
                    out = unc + self.guidance * (out - unc)
            if a.pred == "flow":
                return out
            B, _, F, H, W = x.shape
            sig = (t.float() / 1000).view(B, F, H // a.tpatch, W // a.tpatch)
            sig = sig.repeat_interleave(a.tpatch, 1 + 1).repeat_interleave(a.tpatch, 3).unsqueeze(1)
            return (x.float() - out) / sig.clamp_min(1e-3)

    gen_model = Wrapped()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1, (s + 1) / a.warmup)
            * (0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)) * 0.9 + 0.1)
        ),
    )
    emb = prompt_embedding(16).to(dev)
    g = torch.Generator(dev).manual_seed(a.seed)
    gc = torch.Generator().manual_seed(a.seed)
    results = {
        "args": vars(a),
        "gt": gt.balanced_accuracy,
        "gt_shuffled": gt_shuf.balanced_accuracy,
        "evals": [],
    }
    print(
        f"[{a.name}] params {sum(q.numel() for q in params) / 1e6:.2f}M gt {gt.balanced_accuracy:.3f} gt_shuf {gt_shuf.balanced_accuracy:.3f} setup {time.time() - t0:.0f}s",
        flush=True,
    )

    def evaluate(step, guidance=1.0):
        gen_model.guidance = guidance
        model.eval()
        out = {"step": step, "guidance": guidance}
        for cond, (cb, cm) in {
            "own": (te_b, te_m),
            "shuffled": (te_b[perm], te_m[perm]),
            "zero": (te_b * 0, te_m * 0),
        }.items():
            vids = []
            for lo in range(0, n, 64):
                lat_gen = generate_latents(
                    gen_model,
                    te_first[lo : lo + 64],
                    cb[lo : lo + 64].to(dev),
                    cm[lo : lo + 64].to(dev),
                    lat.shape[2],
                    num_inference_steps=a.sample_steps,
                    shift=a.shift,
                    generator=torch.Generator().manual_seed(1000 + lo),
                )
                vids.append(((space.decode(lat_gen.cpu()) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
            vid = torch.cat(vids)
            s = score(vid, te_b, te_m)
            out[cond] = s.balanced_accuracy
            if cond == "own" and a.out and a.strips:
                import imageio

                k = min(4, n)
                fr = torch.cat([torch.cat([te_v[i], vid[i]], dim=2) for i in range(k)], dim=3)  # (3,T,2H,kW)
                imageio.imwrite(
                    f"{a.out}/strip_{a.name}_{step}_{guidance}.png",
                    torch.cat(list(fr.permute(1, 0, 2, 3)), dim=1).permute(1, 2, 0).numpy(),
                )
                out["per_action"] = {k2: round(v2, 3) for k2, v2 in s.per_action_balanced_accuracy.items()}
            if cond == "own":
                out["own_binary"] = s.accuracy
                out["own_exact"] = s.exact_step_accuracy
                out["own_mag_r"] = s.magnitude_r_all
        model.train()
        return out

    losses, t1 = [], time.time()
    for step in range(1, a.steps + 1):
        idx = torch.randint(len(lat), (a.bs,), generator=gc).to(dev)
        x0 = lat[idx]
        noise = torch.randn(x0.shape, generator=g, device=dev)
        sig = obj.sample_sigmas(a.bs, generator=gc)
        inp = obj.prepare(x0, noise, sig, tpf)
        with torch.autocast(dev.type, torch.bfloat16, enabled=a.bf16 and dev.type == "cuda"):
            drop = a.cfg_drop > 0 and torch.rand((), generator=gc).item() < a.cfg_drop
            ab, am = (
                (None, None)
                if (drop and a.uncond == "none")
                else (tb[idx] * 0, tm[idx] * 0)
                if drop
                else (tb[idx], tm[idx])
            )
            xin = torch.cat([inp.noisy, x0[:, :, :1].expand_as(x0)], 1) if a.concat else inp.noisy
            out = model(xin, inp.timesteps, emb.expand(a.bs, -1, -1), ab, am).float()
        target = inp.target if a.pred == "flow" else x0
        loss = (out - target.float())[:, :, 1:].pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % a.eval_every == 0 or step == a.steps:
            for gw in [float(x) for x in a.guidance.split(",")] if step == a.steps else [1.0]:
                e = evaluate(step, gw)
                e["loss"] = float(np.mean(losses[-100:]))
                e["s_per_step"] = (time.time() - t1) / step
                e["scale"] = float(ctrl.output_scale.detach().abs().mean())
                e["elapsed"] = time.time() - t0
                results["evals"].append(e)
                print(
                    f"[{a.name}] "
                    + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()}),
                    flush=True,
                )
            if a.out:
                Path(a.out).mkdir(parents=True, exist_ok=True)
                Path(a.out, f"sweep_{a.name}.json").write_text(json.dumps(results, indent=1))
        if time.time() - t0 > a.budget:
            print(f"[{a.name}] out of budget at step {step}", flush=True)
            break


p = argparse.ArgumentParser()
p.add_argument("stage")
p.add_argument("--work", default="/tmp/wmx/sw")
p.add_argument("--out")
p.add_argument("--name", default="x")
p.add_argument("--size", type=int, default=32)
p.add_argument("--frames", type=int, default=21)
p.add_argument("--train", type=int, default=2000)
p.add_argument("--test", type=int, default=128)
p.add_argument("--down", type=int, default=1)
p.add_argument("--strips", type=int, default=1)
p.add_argument("--contrast", type=float, default=1.0)
p.add_argument("--concat", type=int, default=0)
p.add_argument("--texture", type=int, default=256)
p.add_argument("--grid", type=int, default=65)
p.add_argument("--workers", type=int, default=2)
p.add_argument("--patch", type=int, default=4)
p.add_argument("--tpatch", type=int, default=2)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--head_dim", type=int, default=32)
p.add_argument("--layers", type=int, default=4)
p.add_argument("--ffn", type=int, default=512)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--bs", type=int, default=16)
p.add_argument("--steps", type=int, default=500)
p.add_argument("--sample_steps", type=int, default=10)
p.add_argument("--shift", type=float, default=3.0)
p.add_argument("--inj", default="wan_ti2v_5b")
p.add_argument("--init_scale", type=float, default=1.0)
p.add_argument("--window", type=int, default=0)
p.add_argument("--pred", default="sample")
p.add_argument("--bf16", type=int, default=1)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--ntest", type=int, default=64)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--eval_every", type=int, default=500)
p.add_argument("--warmup", type=int, default=100)
p.add_argument("--guidance", default="1")
p.add_argument("--cfg_drop", type=float, default=0.0)
p.add_argument("--uncond", default="none")
p.add_argument("--budget", type=float, default=1e9)
a = p.parse_args()
if __name__ == "__main__":
    prep(a) if a.stage == "prep" else run(a)
