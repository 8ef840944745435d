"""Training in the precision users train in: bf16 mixed precision (on CPU through accelerate's CPU autocast).

Trained weights must be fp32 master copies while frozen weights stay bf16: a bf16 weight near 0.1 moves in steps of
about 5e-4, so AdamW steps of lr 1e-5 would be rounded away and a LoRA or backbone would barely train."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from kinema.robot_data.testing import write_action_video_dataset
from kinema.video_world_model import load_wan_components
from kinema.video_world_model.training._cache import write_cache
from kinema.video_world_model.training._train_config import TrainConfig
from kinema.video_world_model.training._train_data import CachedLatentDataset, build_dataset, collate
from kinema.video_world_model.training._trainer import WorldModelTrainer

FRAMES = 5


@pytest.fixture
def bf16_accelerator():
    AcceleratorState._reset_state(True)  # the state is process-wide; other tests create fp32 accelerators
    yield Accelerator(cpu=True, mixed_precision="bf16")
    AcceleratorState._reset_state(True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips") / "data"
    write_action_video_dataset(root, num_clips=2, num_frames=FRAMES, height=64, width=64)
    return root


def config(model_dir, clips, output, **overrides) -> TrainConfig:
    values = {
        "dataset_base_path": str(clips), "model_dir": str(model_dir), "output_path": str(output), "height": 64,
        "width": 64, "num_frames": FRAMES, "max_steps": 3, "save_steps": 100, "dataset_num_workers": 0,
        "mixed_precision": "bf16", "learning_rate": 1e-5, "lr_warmup_ratio": 0.0, "weight_decay": 0.0,
        "action_initial_scale": 0.1, "log_steps": 1, "use_gradient_checkpointing": False,
    }  # fmt: skip
    return TrainConfig(**(values | overrides))


def test_a_small_lr_step_moves_every_lora_weight_and_frozen_weights_stay_bf16(
    tiny_wan_dir, clips, tmp_path, bf16_accelerator
):
    run = config(
        tiny_wan_dir, clips, tmp_path / "run", trainable_models="action_controller,lora", lora_rank=4
    )
    # what kinema-wm train loads under bf16; add_lora changes the transformer, so each trainer gets its own
    built = WorldModelTrainer(
        run, bf16_accelerator, components=load_wan_components(tiny_wan_dir, torch.bfloat16)
    )
    built._build()
    named = dict(built.raw.named_parameters())
    lora = {n: p for n, p in named.items() if ".lora_" in n}
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora.values())
    # frozen weights keep their load dtype: bf16, except the modules diffusers keeps in fp32 (_keep_in_fp32_modules)
    loaded = dict(load_wan_components(tiny_wan_dir, torch.bfloat16)["transformer"].named_parameters())
    frozen = {n: p for n, p in named.items() if n.startswith("model.transformer.") and ".lora_" not in n}
    assert all(not p.requires_grad for p in frozen.values())
    dtypes = {n: p.dtype for n, p in frozen.items()}
    assert dtypes == {
        n: loaded[n.removeprefix("model.transformer.").replace(".base_layer", "")].dtype for n in frozen
    }
    assert sum(d == torch.bfloat16 for d in dtypes.values()) > len(dtypes) / 2
    before = {n: p.detach().clone() for n, p in lora.items() if ".lora_A." in n}
    trained = WorldModelTrainer(
        run, bf16_accelerator, components=load_wan_components(tiny_wan_dir, torch.bfloat16)
    )
    trained.run()  # builds from the same seed: the same initial LoRA weights
    after = dict(trained.raw.named_parameters())
    # lora_B starts at 0, so lora_A's gradient is 0 at step 1 and its first move comes at step 2: ~lr per weight
    changed = [(after[n].detach() != w).float().mean().item() for n, w in before.items()]
    assert min(changed) > 0.95, changed


def test_cached_and_uncached_losses_agree_in_bf16(tiny_wan_dir, clips, tmp_path, bf16_accelerator):
    """The cache stores bf16 latents; the uncached path encodes with the VAE under autocast. Their losses agree to
    bf16 rounding: the stated tolerance is 2% of the loss (a bf16 number has 8 significant bits, 0.4% each)."""
    components = load_wan_components(tiny_wan_dir, torch.bfloat16)
    cache_dir = tmp_path / "cache"
    write_cache(config(tiny_wan_dir, clips, tmp_path / "c"), cache_dir, torch.device("cpu"), torch.bfloat16)
    uncached = WorldModelTrainer(config(tiny_wan_dir, clips, tmp_path / "a"), bf16_accelerator, components)
    cached = WorldModelTrainer(
        config(tiny_wan_dir, clips, tmp_path / "b", cache_dir=str(cache_dir)), bf16_accelerator, components
    )
    for trainer in (uncached, cached):
        trainer._build()
    cached.raw.controller.load_state_dict(uncached.raw.controller.state_dict())
    dataset, _ = build_dataset(uncached.config)
    cache_set = CachedLatentDataset(cache_dir)
    assert cache_set[0]["latents"].dtype == torch.bfloat16
    for i in range(len(cache_set)):
        with bf16_accelerator.autocast():
            losses = [
                trainer.raw(collate([source[i]]), torch.Generator().manual_seed(7)).item()
                for trainer, source in ((uncached, dataset), (cached, cache_set))
            ]
        assert losses[0] == pytest.approx(losses[1], rel=0.02)


def test_a_small_lr_step_moves_the_vace_e_backbone(tmp_path, bf16_accelerator):
    """VACE-E stage 2 of the shipped configs trains the whole transformer ("dit") at lr 1e-5."""
    from kinema.robot_data.testing import write_vace_e_dataset
    from kinema.video_world_model.vace_e import VaceEConfig
    from kinema.video_world_model.vace_e._train import VaceETrainer
    from kinema.video_world_model.vace_e.testing import write_tiny_vace

    root = tmp_path / "episodes"
    metadata = write_vace_e_dataset(root, num_frames=13, height=32, width=32).metadata
    model_dir = write_tiny_vace(tmp_path / "vace")
    run = VaceEConfig(
        model_dir=str(model_dir), dataset_base_path=str(root), task_metadata_path=str(metadata), num_frames=13,
        height=32, width=32, encoder_width=32, encoder_layers=1, encoder_heads=4, vace_e_layers="0,2",
        trainable_models="vace_e,dit", learning_rate=1e-5, lr_warmup_ratio=0.0, weight_decay=0.0, max_steps=2,
        save_steps=100, dataset_num_workers=0, mixed_precision="bf16", use_gradient_checkpointing=False,
        output_path=str(tmp_path / "run"),
    )  # fmt: skip
    trainer = VaceETrainer(run, bf16_accelerator)  # loads the transformer in bf16, as under mixed precision
    trainer.run()
    vace = trainer.raw.model.vace
    weight = vace.blocks[0].attn1.to_q.weight
    assert weight.dtype == torch.float32
    assert vace.condition_embedder.text_embedder.linear_1.weight.dtype == torch.float32  # all of "dit" trains
    from diffusers import WanVACETransformer3DModel

    loaded = WanVACETransformer3DModel.from_pretrained(model_dir / "transformer", torch_dtype=torch.bfloat16)
    start = loaded.blocks[0].attn1.to_q.weight.float()
    assert (weight.detach() != start).float().mean().item() > 0.95
