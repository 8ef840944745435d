import json

import pytest

from kinema.hybrid_policy import TrainConfig, load_hybrid, train
from kinema.hybrid_policy.testing import tiny_config, tiny_train_config


def log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]


def test_tiny_run_loss_falls(dock_data, tmp_path):
    config = tiny_config(variant="C", kl_schedule="0.001")
    result = train(
        config, tiny_train_config(dock_data, tmp_path / "run", max_steps=60, log_every=10, val_every=1000)
    )
    losses = [r["train/diffusion"] for r in log(tmp_path / "run") if "train/diffusion" in r]
    assert result.complete and result.step == 60
    assert losses[-1] < 0.6 * losses[0]


def test_artifacts_and_validation(trained):
    _, out = trained
    for name in (
        "hybrid_config.json",
        "model.safetensors",
        "policy.json",
        "train_result.json",
        "train_config.json",
    ):
        assert (out / name).is_file(), name
    result = json.loads((out / "train_result.json").read_text())
    assert result["step"] == 12 and result["complete"]
    assert {"val/l1", "val/l2", "val/diffusion", "val/kl"} <= set(result["val"])
    model = load_hybrid(out, variant="C")
    assert model.config.notes["task"] == "dock"


def test_resume_continues_and_refuses_another_variant(trained, tmp_path):
    config, out = trained
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tiny_train_config(out.parent / "unused", out, max_steps=12))
    with pytest.raises(ValueError, match="variant: checkpoint 'C', now 'B'"):
        train(tiny_config(variant="B"), tiny_train_config(_data(trained), out, max_steps=14, resume=True))


def test_step_checkpoints_are_written_by_the_hybrid_s_own_saver(trained):
    from safetensors import safe_open

    _, out = trained
    steps = sorted((out / "checkpoints").glob("step-*"))
    assert steps, "no step checkpoint"
    with safe_open(str(steps[-1] / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata == {"format": "kinema.hybrid", "variant": "C"}  # not ACT's "kinema.act"


def _data(trained):
    _, out = trained
    train_config = json.loads((out / "train_config.json").read_text())["train"]
    return train_config["data"]


def test_train_config_is_act_s_with_diffusion_policy_defaults():
    from kinema.act_policy import TrainConfig as ACTTrainConfig
    from kinema.hybrid_policy import TrainConfig

    config = TrainConfig(data="d", out_dir="o")
    assert isinstance(config, ACTTrainConfig)
    assert (config.batch_size, config.lr, config.lr_schedule, config.warmup_steps) == (
        64,
        1e-4,
        "cosine",
        500,
    )
    assert config.ema and not config.channels_last and config.to_dict()["val_data"] is None
    with pytest.raises(ValueError, match=r"TrainConfig\.lr: expected a finite number"):
        TrainConfig(data="d", out_dir="o", lr=True)  # ACT's checks run too
    with pytest.raises(ValueError, match=r"TrainConfig\.ema_max_decay"):
        TrainConfig(data="d", out_dir="o", ema_max_decay=1.0)


def test_policy_devices_map_to_training_devices():
    from kinema.hybrid_policy._train import train_device

    assert [train_device(d) for d in (None, "cpu", "cuda", "cuda:1")] == ["auto", "cpu", "cuda", "cuda"]
    with pytest.raises(ValueError, match=r"TrainConfig\.device"):
        TrainConfig(data="d", out_dir="o", device=train_device("mps"))
