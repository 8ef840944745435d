"""Pixel latents, the action-metric arithmetic, and the small drone world model's training and sampling."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kinema.video_world_model import load_controller
from kinema.video_world_model.drone._metric import derangement, match_generated, score_actions
from kinema.video_world_model.drone._model import (
    DroneWorldModelTrainer,
    drone_transformer,
    generate_latents,
)
from kinema.video_world_model.modeling import WanActionTransformer
from kinema.video_world_model.modeling._pixel_latents import PixelLatentSpace
from kinema.video_world_model.training._train_config import TrainConfig
from kinema.video_world_model.training._train_data import CACHE_FORMAT, CACHE_INDEX


def test_pixel_latents_round_trip_exactly():
    video = torch.rand(2, 3, 9, 16, 8) * 2 - 1
    space = PixelLatentSpace.fit(video)
    latents = space.encode(video)
    assert latents.shape == (2, 192, 3, 4, 2)
    assert abs(latents.mean().item()) < 0.05 and abs(latents.std().item() - 1) < 0.05
    torch.testing.assert_close(space.decode(latents), video, atol=1e-5, rtol=0)
    # channel layout: RGB, time in the latent frame, row and column in the 4x4 patch
    plain = PixelLatentSpace()
    index = ((1 * 4 + 2) * 4 + 3) * 4 + 0  # green, 3rd frame of latent frame 2 (video frame 7), row 3, col 0
    assert plain.encode(video)[1, index, 2, 1, 0] == video[1, 1, 7, 4 + 3, 0]
    with pytest.raises(ValueError, match="T=8 must be 4n\\+1"):
        plain.encode(video[:, :, :8])
    with pytest.raises(ValueError, match="expected 192 channels, got 48"):
        plain.decode(torch.zeros(1, 48, 2, 4, 4))


def test_pixel_latent_space_saves_and_loads(tmp_path):
    space = PixelLatentSpace(4, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    space.save(tmp_path)
    assert PixelLatentSpace.load(tmp_path) == space
    with pytest.raises(FileNotFoundError, match=r"no latent_space\.json"):
        PixelLatentSpace.load(tmp_path / "missing")


def test_scores_by_hand():
    true_b = np.zeros((1, 4, 8))
    true_b[0, 0, 0] = true_b[0, 1, 0] = true_b[0, 2, 4] = 1  # forward, forward, yaw_left, idle
    true_m = true_b * np.array([0.002] * 4 + [0.1] * 4)
    est_b = true_b.copy()
    est_b[0, 1, 0] = 0  # a missed forward
    est_b[0, 3, 1] = 1  # a spurious back
    scores = score_actions(true_b, true_m, est_b, est_b * 0.002)
    assert scores.accuracy == pytest.approx(30 / 32)
    assert scores.per_action_accuracy["forward"] == 0.75 and scores.per_action_accuracy["back"] == 0.75
    # forward: commanded 2 (1 right), not commanded 2 (2 right) -> 0.75; back: only not commanded, 3 of 4 right
    assert scores.per_action_balanced_accuracy["forward"] == 0.75
    assert scores.per_action_balanced_accuracy["back"] == 0.75
    assert scores.exact_step_accuracy == 0.5
    assert scores.axis_confusion["forward/back"] == [[0, 0, 0], [1, 1, 0], [0, 1, 1]]
    # chance p q + (1 - p)(1 - q): forward p = 0.5, q = 0.25 -> 0.5; back p = 0, q = 0.25 -> 0.75;
    # yaw_left p = q = 0.25 -> 0.625; the other five 1
    assert scores.chance_accuracy == pytest.approx((0.5 + 0.75 + 0.625 + 5) / 8)
    perfect = score_actions(true_b, true_m, true_b, true_m)
    assert perfect.accuracy == perfect.balanced_accuracy == perfect.exact_step_accuracy == 1.0


def test_derangement_and_matching(tmp_path):
    for n in (2, 3, 10):
        perm = derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip_00001.mp4").write_bytes(b"x")
    (tmp_path / "clip_00002.mp4").write_bytes(b"x")
    (tmp_path / "other.mp4").write_bytes(b"x")
    matched, unmatched = match_generated(tmp_path, ["videos/clip_00000.mp4", "videos/clip_00001.mp4",
                                                    "videos/clip_00002.mp4"])  # fmt: skip
    assert matched == {1: tmp_path / "videos/clip_00001.mp4", 2: tmp_path / "clip_00002.mp4"}
    assert unmatched == ["other.mp4"]


@pytest.fixture()
def tiny_cache(tmp_path):
    """A pixel-latent cache in kinema-wm cache's format: 4 clips of 9 frames at 32x32 (2 action steps)."""
    root = tmp_path / "cache"
    root.mkdir()
    space = PixelLatentSpace()
    space.save(root)
    generator = torch.Generator().manual_seed(0)
    shard, rows = {}, []
    for i in range(4):
        video = torch.rand(1, 3, 9, 32, 32, generator=generator) * 2 - 1
        shard[f"{i:06d}.latents"] = space.encode(video)[0].to(torch.bfloat16)
        shard[f"{i:06d}.prompt_embeds"] = torch.zeros(1, 16, dtype=torch.bfloat16)
        binary = torch.zeros(2, 8)
        binary[:, i % 8] = 1
        rows.append({"shard": "shard-00000.safetensors", "key": f"{i:06d}", "prompt": "a drone", "row": str(i),
                     "action_binary": binary.tolist(), "action_magnitude": (binary * 0.1).tolist()})  # fmt: skip
    save_file(shard, str(root / "shard-00000.safetensors"))
    index = {"format": CACHE_FORMAT, "action_magnitude_scale": [100.0] * 4 + [1.0] * 4, "rows": rows}
    (root / CACHE_INDEX).write_text(json.dumps(index))
    return root


def _config(cache, output, **overrides):
    return TrainConfig(**({
        "model_dir": str(cache), "cache_dir": str(cache), "num_frames": 9, "batch_size": 2, "max_steps": 2,
        "learning_rate": 1e-3, "lr_warmup_ratio": 0.0, "use_gradient_checkpointing": False,
        "dataset_num_workers": 0, "output_path": str(output), "save_steps": 2, "save_full_state": True,
        "mixed_precision": "no", "loss_weighting": "none", "sigma_schedule": "inference",  # the experiment's
    } | overrides))  # fmt: skip


def test_drone_trainer_trains_the_transformer_and_exports_it(tiny_cache, tmp_path):
    transformer = drone_transformer("tiny", seed=0)
    before = {n: p.detach().clone() for n, p in transformer.named_parameters()}
    result = DroneWorldModelTrainer(_config(tiny_cache, tmp_path / "run"), transformer).run()
    assert result.step == 2 and all(np.isfinite(v) for v in result.losses.values())
    changed = [n for n, p in transformer.named_parameters() if not torch.equal(p, before[n])]
    assert "proj_out.weight" in changed and "patch_embedding.weight" in changed
    from diffusers import WanTransformer3DModel

    saved = WanTransformer3DModel.from_pretrained(tmp_path / "run" / "transformer")
    torch.testing.assert_close(saved.proj_out.weight, transformer.proj_out.weight)
    controller, _ = load_controller(tmp_path / "run")
    assert controller.output_scale.abs().max() > 0

    # base model: the controller stays an exact identity (frozen at output scale 0)
    base = drone_transformer("tiny", seed=0)
    config = _config(tiny_cache, tmp_path / "base", action_initial_scale=0.0)
    DroneWorldModelTrainer(config, base, train_controller=False).run()
    frozen, _ = load_controller(tmp_path / "base")
    assert torch.count_nonzero(frozen.output_scale) == 0


def test_generation_keeps_the_first_frame_and_reads_the_actions(tiny_cache, tmp_path):
    DroneWorldModelTrainer(_config(tiny_cache, tmp_path / "run"), drone_transformer("tiny", seed=0)).run()
    from diffusers import WanTransformer3DModel

    controller, _ = load_controller(tmp_path / "run")
    with torch.no_grad():
        controller.output_scale.fill_(0.5)
    model = WanActionTransformer(
        WanTransformer3DModel.from_pretrained(tmp_path / "run" / "transformer"), controller
    )
    first = torch.randn(2, 192, 1, 8, 8)
    binary = torch.zeros(2, 2, 8)
    binary[:, :, 0] = 1

    def sample(b, m):
        return generate_latents(model, first, b, m, 3, num_inference_steps=3,
                                generator=torch.Generator().manual_seed(0))  # fmt: skip

    with_actions = sample(binary, binary * 0.002)
    assert with_actions.shape == (2, 192, 3, 8, 8)
    assert torch.equal(with_actions[:, :, :1], first)
    without = sample(torch.zeros_like(binary), torch.zeros_like(binary))
    assert torch.equal(without[:, :, :1], first)
    assert (with_actions[:, :, 1:] - without[:, :, 1:]).abs().mean() > 1e-4  # the actions change the video


def test_sample_prediction_trains_in_the_loop_and_generation_uses_it(tiny_cache, tmp_path):
    config = _config(tiny_cache, tmp_path / "run", prediction_type="sample", flow_shift=3.0, max_steps=4,
                     save_steps=4, learning_rate=3e-3)  # fmt: skip
    result = DroneWorldModelTrainer(config, drone_transformer("tiny", seed=0)).run()
    assert (
        result.losses[4] < result.losses[1]
    )  # an x0 loss on random clips falls from ~2 towards their variance
    from diffusers import WanTransformer3DModel

    controller, _ = load_controller(tmp_path / "run")
    model = WanActionTransformer(
        WanTransformer3DModel.from_pretrained(tmp_path / "run" / "transformer"), controller
    )
    first = torch.randn(1, 192, 1, 8, 8)
    binary = torch.zeros(1, 2, 8)
    out = generate_latents(model, first, binary, binary, 3, num_inference_steps=4, shift=3.0,
                           prediction_type="sample", generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(out[:, :, :1], first) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="--prediction_type"):
        _config(tiny_cache, tmp_path / "x", prediction_type="epsilon")
    with pytest.raises(ValueError, match="--flow_shift"):
        _config(tiny_cache, tmp_path / "x", flow_shift=-1.0)
