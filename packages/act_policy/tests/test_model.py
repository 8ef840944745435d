"""The model: shapes, losses against hand-computed values, z = 0 at inference, normalization, parameter groups,
the coordinate remedies and the config's validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from kinema.act_policy import (
    ACT,
    REMEDIES,
    ACTConfig,
    contrastive_coordinate_loss,
    kl_divergence,
    masked_l1,
)
from kinema.act_policy.testing import tiny_config


def _batch(config: ACTConfig, batch: int = 3, size=(48, 64), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = len(config.camera_names)
    out = {
        "image": torch.randint(0, 256, (batch, n, *size, 3), dtype=torch.uint8, generator=g),
        "qpos": torch.randn(batch, config.state_dim, generator=g),
        "action": torch.randn(batch, config.chunk_size, config.action_dim, generator=g),
        "is_pad": torch.zeros(batch, config.chunk_size, dtype=torch.bool),
    }
    if config.use_environment_state:
        out["environment_state"] = torch.rand(batch, config.environment_state_dim, generator=g) * 0.2 + 0.4
    return out


# ---------------------------------------------------------------------------------------------------- losses


def test_masked_l1_matches_hand_computation():
    predicted = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, -1.0]]])  # (B=2, C=2, A=2)
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [9.0, 9.0]]])
    is_pad = torch.tensor([[False, True], [False, True]])
    # unpadded |errors|: 1 + 2 (sample 0, step 0) and 0.5 + 0.5 (sample 1, step 0); mean over all 8 entries
    assert masked_l1(predicted, target, is_pad).item() == pytest.approx((1 + 2 + 0.5 + 0.5) / 8)
    with pytest.raises(ValueError, match="is_pad"):
        masked_l1(predicted, target, is_pad[:, :1])


def test_kl_matches_hand_computation():
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    log_var = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # per entry -0.5 * (1 + log var - mu^2 - var): [0.5, 0.5 * (1 - log 2)] and [0, 2]; sum over dims, mean over B
    expected = ((0.5 + 0.5 * (1 - math.log(2.0))) + (0.0 + 2.0)) / 2
    assert kl_divergence(mu, log_var).item() == pytest.approx(expected, rel=1e-6)
    assert kl_divergence(torch.zeros(4, 3), torch.zeros(4, 3)).item() == 0.0


def test_contrastive_loss_matches_hand_computation():
    actions = torch.tensor([[[0.0, 0.0]], [[0.06, 0.08]], [[3.0, 4.0]]])  # (B=3, C=1, A=2)
    coordinates = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.01]])
    # pairs with coordinate distance > 0.05: (0, 1) d=0.1 and (1, 2) d=0.1005; (0, 2) d=0.01 is not
    # RMS action distances: (0, 1) sqrt((0.06^2 + 0.08^2) / 2) = 0.070711, (1, 2) >> margin
    hinge_01 = 0.1 - math.sqrt((0.06**2 + 0.08**2) / 2)
    expected = (hinge_01 + 0.0) / 2
    loss = contrastive_coordinate_loss(actions, coordinates, margin=0.1, threshold=0.05)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # nothing differs by more than the threshold: no pair, zero loss (and no division by zero)
    assert contrastive_coordinate_loss(actions, coordinates, margin=0.1, threshold=1.0).item() == 0.0
    # identical predictions for distant coordinates: the full margin, with a finite gradient
    same = torch.zeros(2, 4, 3, requires_grad=True)
    loss = contrastive_coordinate_loss(
        same, torch.tensor([[0.0, 0.0], [1.0, 0.0]]), margin=0.2, threshold=0.5
    )
    assert loss.item() == pytest.approx(0.2, abs=1e-5)
    loss.backward()
    assert torch.isfinite(same.grad).all()


def test_total_loss_combines_the_terms_with_their_weights():
    config = tiny_config(environment_state_dim=2, dropout=0.0, kl_weight=10.0).with_remedies(
        "aux_head", "contrastive"
    )
    model = ACT(config).eval()
    loss, terms = model.compute_loss(_batch(config))
    expected = terms["l1"] + 10.0 * terms["kl"] + 0.1 * terms["coord_aux"] + 0.1 * terms["contrastive"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(terms) == {"l1", "kl", "coord_aux", "contrastive", "loss"}


# ---------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("remedy", list(REMEDIES))
def test_shapes_for_every_remedy(remedy):
    config = tiny_config(environment_state_dim=2, camera_names=("top", "angle")).with_remedies(remedy)
    model = ACT(config)
    batch = _batch(config, batch=3)
    out = model(batch)
    assert out["actions"].shape == (3, 8, 14)
    assert out["mu"].shape == out["log_sigma_x2"].shape == (3, 4)
    assert (out["coord_pred"] is not None) == (remedy == "aux_head")
    if remedy == "aux_head":
        assert out["coord_pred"].shape == (3, 2)
    loss, _ = model.compute_loss(batch)
    loss.backward()
    assert model.eval().predict(batch).shape == (3, 8, 14)


def test_image_tokens_one_per_feature_position_and_crop_views():
    config = tiny_config(environment_state_dim=2, camera_names=("top", "left_wrist"))
    model = ACT(config)
    images = model.prepare_images(_batch(config, size=(64, 96))["image"])
    tokens, pos = model._image_tokens(images, None, None)
    assert tokens.shape == (3, 2 * 2 * 3, 32) and pos.shape == (12, 32)  # 2 cameras x (64/32) x (96/32)
    extra = ACT(
        dataclasses.replace(config, coord_crop="extra", crop_size=0.5)
    )  # top has a geometry, the wrist none
    coords = torch.tensor([[0.1, 0.5]] * 3)
    tokens, pos = extra._image_tokens(images, coords, None)
    assert tokens.shape == (3, 12 + 1, 32)  # + one 32x32 crop of "top" -> 1x1 feature map
    replace = ACT(dataclasses.replace(config, coord_crop="replace", crop_size=0.5))
    tokens, _ = replace._image_tokens(images, coords, None)
    assert tokens.shape == (3, 1 + 6, 32)  # top replaced by its crop, the wrist camera as it was


def test_uint8_and_float_images_give_the_same_result():
    config = tiny_config()
    model = ACT(config).eval()
    batch = _batch(config)
    as_float = {**batch, "image": batch["image"].permute(0, 1, 4, 2, 3).float() / 255}
    torch.testing.assert_close(model.predict(batch), model.predict(as_float))


def test_z_is_zero_at_inference_and_sampled_in_training():
    config = tiny_config(environment_state_dim=2)
    model = ACT(config)
    seen = []
    model.latent_proj.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].clone()))
    batch = _batch(config)
    model.eval().predict(batch)
    assert torch.equal(seen[-1], torch.zeros(3, 4))
    model.eval()(batch)  # targets in eval mode: z is the posterior mean
    mean = seen[-1]
    model.train()(batch)
    model.train()(batch)
    assert not torch.equal(seen[-1], seen[-2]) and not torch.equal(seen[-1], mean)  # sampled
    no_vae = ACT(dataclasses.replace(config, use_vae=False))
    no_vae.latent_proj.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].clone()))
    out = no_vae.train()(batch)
    assert out["mu"] is None and torch.equal(seen[-1], torch.zeros(3, 4))  # without the CVAE z is always 0
    loss, terms = no_vae.compute_loss(batch)
    assert "kl" not in terms and loss.item() == pytest.approx(terms["l1"].item())


def test_sampled_z_changes_the_chunks_across_calls_and_zero_z_does_not():
    """inference_z="sample": z ~ N(0, I) per query (seeded by a generator), so two calls on one observation give
    different chunks; z = 0 gives the same chunk every time. Same weights for both."""
    config = tiny_config(environment_state_dim=2)
    torch.manual_seed(0)
    zero = ACT(config).eval()
    sampled = ACT(dataclasses.replace(config, inference_z="sample")).eval()
    sampled.load_state_dict(zero.state_dict())
    batch = _batch(config)
    assert torch.equal(zero.predict(batch), zero.predict(batch))  # deterministic
    first, second = sampled.predict(batch), sampled.predict(batch)
    assert (first - second).abs().amax(dim=(1, 2)).min() > 1e-4  # every row's chunk changed
    again = [sampled.predict(batch, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(again[0], again[1])  # seeded: reproducible
    seen = []
    sampled.latent_proj.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].clone()))
    sampled.predict(batch, generator=torch.Generator().manual_seed(7))
    expected = torch.randn(3, config.latent_dim, generator=torch.Generator().manual_seed(7))
    assert torch.equal(seen[-1], expected)  # z is the N(0, I) draw itself
    torch.testing.assert_close(zero(batch | {"action": None}, z=expected)["actions"], sampled(
        {k: v for k, v in batch.items() if k not in ("action", "is_pad")}, z=expected)["actions"])  # fmt: skip
    with pytest.raises(
        ValueError, match="inference_z: 'sample' draws the CVAE's latent, but use_vae is False"
    ):
        dataclasses.replace(config, use_vae=False, inference_z="sample")
    with pytest.raises(ValueError, match="inference_z: expected one of"):
        dataclasses.replace(config, inference_z="prior")


def test_a_sampled_z_policy_from_a_checkpoint(trained):
    """load_policy(inference_z="sample") runs a z = 0 checkpoint with a sampled latent; its chunks for one
    observation differ between queries, reproducibly for a seed; the default stays deterministic."""
    from kinema.act_policy import load_policy
    from kinema.act_policy.testing import fake_observation

    config, folder = trained
    observation = fake_observation(config, 2, [0, 0])
    chunks = {}
    for name, options in (("zero", {}), ("sample", {"inference_z": "sample", "seed": 3})):
        policy = load_policy(folder, device="cpu", **options)
        chunks[name] = [policy.predict_chunk(observation) for _ in range(2)]
    assert torch.equal(chunks["zero"][0], chunks["zero"][1])
    assert not torch.allclose(chunks["sample"][0], chunks["sample"][1])
    reseeded = load_policy(folder, device="cpu", inference_z="sample", seed=3)
    assert torch.equal(reseeded.predict_chunk(observation), chunks["sample"][0])


def test_normalization_uses_the_statistics_and_predict_unnormalizes():
    config = tiny_config(environment_state_dim=2)
    model = ACT(config).eval()
    batch = _batch(config)
    stats = {
        "qpos": {"mean": torch.arange(14.0), "std": torch.full((14,), 2.0)},
        "action": {"mean": torch.full((14,), 5.0), "std": torch.full((14,), 3.0)},
        "environment_state": {"mean": torch.tensor([0.1, 0.5]), "std": torch.tensor([0.05, 0.05])},
    }
    normalized = model(dict(batch, action=None))["actions"]
    model.set_normalization(stats)
    shifted = {
        **batch,
        "qpos": batch["qpos"] * 2.0 + torch.arange(14.0),
        "environment_state": batch["environment_state"] * 0.05 + torch.tensor([0.1, 0.5]),
    }
    torch.testing.assert_close(model.predict(shifted), normalized * 3.0 + 5.0)
    with pytest.raises(
        ValueError, match=r"stats\['qpos'\]\['mean'\]: expected 14 values \(ACTConfig.state_dim\), got 7"
    ):
        model.set_normalization({**stats, "qpos": {"mean": torch.zeros(7), "std": torch.ones(7)}})
    with pytest.raises(ValueError, match="missing the field 'environment_state'"):
        model.set_normalization({k: v for k, v in stats.items() if k != "environment_state"})


def test_backbone_parameter_group_has_its_own_learning_rate():
    model = ACT(tiny_config(environment_state_dim=2).with_remedies("film"))
    groups = model.parameter_groups(lr=1e-4, lr_backbone=1e-5, weight_decay=1e-4)
    optimizer = torch.optim.AdamW(groups)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["main"]["lr"] == 1e-4 and by_name["backbone"]["lr"] == 1e-5
    backbone_ids = {id(p) for p in by_name["backbone"]["params"]}
    for name, parameter in model.named_parameters():
        in_backbone = name.startswith("backbone.") and not name.startswith("backbone.film.")
        assert (id(parameter) in backbone_ids) == in_backbone, name
    assert len(backbone_ids) + len(by_name["main"]["params"]) == len(list(model.parameters()))


def test_film_remedy_is_identity_at_init():
    """Switching FiLM on changes nothing until its weights move: same weights -> same actions."""
    torch.manual_seed(0)
    plain = ACT(tiny_config(environment_state_dim=2, coord_embed_dim=16)).eval()
    film = ACT(tiny_config(environment_state_dim=2, coord_embed_dim=16).with_remedies("film")).eval()
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("backbone.film.", "coord_embed.")) for k in missing)
    batch = _batch(plain.config)
    torch.testing.assert_close(film.predict(batch), plain.predict(batch), rtol=0, atol=0)


def test_coordinates_reach_the_output_through_each_remedy():
    """With the remedies' zero-init parts moved, different target coordinates give different chunks."""
    for remedy in ("film", "crop", "strong"):
        torch.manual_seed(0)
        model = ACT(tiny_config(environment_state_dim=2).with_remedies(remedy)).eval()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "film" in name or "coord_injectors" in name:
                    parameter.normal_(0, 0.5)
        model.env_proj.weight.data.zero_()  # no path through the plain coordinate token
        model.env_proj.bias.data.zero_()
        batch = _batch(model.config, batch=1)
        moved = {**batch, "environment_state": batch["environment_state"] + torch.tensor([[0.08, -0.08]])}
        assert not torch.allclose(model.predict(batch), model.predict(moved)), remedy


def test_decoder_layers_are_all_used():
    """n_decoder_layers is a real setting: every layer changes the output (not only the first, as originally)."""
    torch.manual_seed(0)
    model = ACT(tiny_config(n_decoder_layers=3)).eval()
    batch = _batch(model.config)
    before = model.predict(batch)
    with torch.no_grad():
        model.decoder.layers[2].ffn.linear2.bias.add_(1.0)
    assert not torch.allclose(before, model.predict(batch))


# ------------------------------------------------------------------------------------------------ config


def test_config_round_trip_and_validation(tmp_path):
    config = tiny_config(environment_state_dim=2, image_size=(64, 96)).with_remedies("crop", "strong")
    config.save(tmp_path)
    assert ACTConfig.load(tmp_path) == config
    assert config.coordinate_remedies() == ["crop", "strong"]
    cases = [
        ({"n_action_steps": 9}, "n_action_steps: 9 is more than chunk_size 8"),
        ({"temporal_ensemble_coeff": 0.01}, "n_action_steps must be 1"),
        ({"coord_film": True}, r"remedies \['film'\] need coordinates, but environment_state_dim is 0"),
        ({"dim_model": 33}, "not divisible by n_heads"),
        ({"dim_model": 34}, "multiple of 4"),
        ({"camera_names": ()}, "camera_names"),
        ({"coord_crop": "maybe"}, "coord_crop"),
        (
            {"environment_state_dim": 2, "coord_crop": "extra", "camera_names": ("left_wrist",)},
            "known geometry",
        ),
        ({"environment_state_dim": 2, "coord_crop": "extra", "crop_target": 1}, "crop_target: pair 1"),
        ({"environment_state_dim": 2, "coord_film": True, "coord_film_blocks": "0,9"}, r"\[9\] outside"),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message):
            tiny_config(**changes)
    with pytest.raises(ValueError, match=r"unknown ACTConfig fields \['hidden_size'\]"):
        ACTConfig.from_dict({**config.to_dict(), "hidden_size": 3})
    with pytest.raises(ValueError, match="unknown 'magic'"):
        config.with_remedies("magic")
    assert (
        ACTConfig().frozen_batchnorm is False
        and ACTConfig(pretrained_backbone="w.pth").frozen_batchnorm is True
    )
