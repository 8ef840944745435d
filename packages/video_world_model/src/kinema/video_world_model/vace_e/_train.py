"""``kinema-wm vace-e train``: staged VACE-E training on kinema's training loop (no second loop).

Output of a run (one folder per stage, each in the training command's layout):

    <output_path>/<stage name>/
        vace_e_train_config.json     the model config (base model, layers, encoder, CLIP path) and the run's options
        vace_e.safetensors           task-embodiment encoder + injectors (+ guidance head)
        lora.safetensors             when LoRA trained
        transformer/                 when the transformer itself trained (dit or vace), diffusers layout
        checkpoints/step-XXXXXXXXX/  full state (staged runs always save it, so each stage resumes)
        validation/step-XXXXXXXXX/   generated videos + metrics, every --validate_every_epochs epochs
        stage_done.json              written when the stage has finished
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from diffusers import WanVACEPipeline, WanVACETransformer3DModel
from safetensors.torch import load_file, save_file
from torch import nn

from kinema.robot_data import VaceEConfig as EpisodeConfig
from kinema.robot_data import VaceEEpisodeDataset, collate_vace_e

from .._atomic import write_atomic, write_dir_atomic
from .._state_dict import check_state_dict
from ..loading._checkpoint import complete_checkpoints
from ..loading._lora import add_lora, load_lora_state_dict, lora_state_dict
from ..loading._wan import load_diffusers_components
from ..modeling._flow_matching import FlowMatchingObjective
from ..training._loop import Trainer, TrainResult
from ..training._train_config import lora_module_names
from ._config import VaceEConfig
from ._inputs import VaceEInputs
from ._model import VaceETransformer
from ._task_encoder import TaskEmbodimentEncoder, pool_per_latent_frame

TRAIN_CONFIG = "vace_e_train_config.json"
WEIGHTS = "vace_e.safetensors"
LORA = "lora.safetensors"
STAGE_DONE = "stage_done.json"


def guidance_loss(
    prediction: torch.Tensor,
    hand_motion: torch.Tensor | None,
    mask: torch.Tensor | None,
    reference_frames: int,
    object_trajectory: torch.Tensor | None = None,
    object_trajectory_mask: torch.Tensor | None = None,
    object_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The guidance head's prediction (B, R+F, 20 [+ 3 * max_objects]) against the given motion pooled per latent
    frame: a masked L2 to the hand motion (B, T_h, 20) plus, when objects are given, a masked L2 to each object's
    position (object_trajectory (B, T_o, N, 9)[..., :3]; object_mask (B, N) drops padded objects). Reference frames,
    frames without data and padded objects count for nothing; each term is a mean over what is valid."""
    video_frames = prediction.shape[1] - reference_frames
    predicted = prediction[:, reference_frames:].float()  # (B, F, 20 [+ 3 * max_objects])
    loss = predicted.new_zeros(())
    if hand_motion is not None:
        target, valid = pool_per_latent_frame(hand_motion.float(), mask, video_frames)  # (B, F, 20), (B, F)
        error = (predicted[..., :20] - target).pow(2).mean(-1)  # (B, F)
        loss = loss + (error * valid).sum() / valid.sum().clamp(min=1)
    if object_trajectory is not None:
        batch, steps, objects, _ = object_trajectory.shape
        capacity = (prediction.shape[-1] - 20) // 3
        if objects > capacity:
            raise ValueError(
                f"guidance_loss: {objects} objects but the guidance head predicts {capacity} (max_objects)"
            )
        positions = object_trajectory[..., :3].float().reshape(batch, steps, objects * 3)
        target, valid = pool_per_latent_frame(
            positions, object_trajectory_mask, video_frames
        )  # (B, F, 3N), (B, F)
        error = (predicted[..., 20 : 20 + 3 * objects] - target).pow(2)
        error = error.view(batch, video_frames, objects, 3).mean(-1)  # (B, F, N)
        weights = valid.unsqueeze(-1) & object_mask.unsqueeze(1)  # (B, F, N)
        loss = loss + (error * weights).sum() / weights.sum().clamp(min=1)
    return loss


class VaceETrainingModule(nn.Module):
    def __init__(
        self,
        model: VaceETransformer,
        inputs: VaceEInputs,
        objective: FlowMatchingObjective,
        guidance_weight: float,
    ):
        super().__init__()
        self.model = model
        self.objective = objective
        self.guidance_weight = guidance_weight
        self._inputs = {"inputs": inputs}  # the VAE, text encoder and CLIP never train: not submodules

    @property
    def inputs(self) -> VaceEInputs:
        return self._inputs["inputs"]

    @torch.no_grad()
    def encode(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Everything a loss needs that does not train: prompt embeddings, target and control latents, task inputs."""
        device, dtype = self.model.device, self.model.dtype
        prompt_embeds = self.inputs.prompt_embeds(list(batch["prompt"]), device, dtype)
        latents, references = self.inputs.target_latents(batch, device)  # (B, z, R+F, h, w)
        return {
            "prompt_embeds": prompt_embeds,
            "latents": latents,
            "references": references,
            "control": self.inputs.control_latents(batch, device, dtype),
            "task": self.inputs.task(batch, prompt_embeds, device),
        }

    def loss(self, encoded: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """Flow-matching loss over the video frames (+ the weighted guidance loss) of an encoded batch."""
        latents, references, task = encoded["latents"], encoded["references"], encoded["task"]
        dtype = self.model.dtype
        noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
        sigmas = self.objective.sample_sigmas(
            latents.shape[0], torch.Generator().manual_seed(generator.initial_seed())
        )
        step = self.objective.prepare(latents, noise, sigmas)
        prediction, features = self.model(
            step.noisy.to(dtype), step.timesteps, encoded["prompt_embeds"], encoded["control"], task=task,
            num_reference_frames=references, return_features=True,
        )  # fmt: skip
        loss = self.objective.loss(prediction, step, first_frame=references)
        head = self.model.guidance_head
        has_objects = task.object_trajectory is not None and head is not None and head.objects is not None
        if self.guidance_weight > 0 and head is not None and (task.hand_motion is not None or has_objects):
            predicted = head(features, latents.shape[2])
            loss = loss + self.guidance_weight * guidance_loss(
                predicted, task.hand_motion, task.hand_motion_mask, references,
                *((task.object_trajectory, task.object_trajectory_mask, task.object_mask) if has_objects else ()),
            )  # fmt: skip
        return loss

    def forward(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        return self.loss(self.encode(batch), generator)


def episode_dataset(config: VaceEConfig, base_path: str | None = None) -> VaceEEpisodeDataset:
    """The training episodes (``config.dataset_window`` windows, ``dataset_repeat`` times), or with ``base_path``
    the episodes of another folder (validation, generation) once each, from their first frame."""
    return VaceEEpisodeDataset(
        EpisodeConfig(
            base_path=base_path or config.dataset_base_path,
            metadata_path=config.task_metadata_path,
            num_frames=config.num_frames,
            height=config.height,
            width=config.width,
            max_pixels=None if config.height else config.max_pixels,
            max_hand_motion_length=config.max_hand_motion_length,
            max_object_trajectory_length=config.max_object_trajectory_length,
            max_objects=config.max_objects,
            fallback_to_video_only=config.fallback_to_video_only,
            repeat=config.dataset_repeat if base_path is None else 1,
            window=config.dataset_window if base_path is None else "first",
            seed=config.seed,
        )
    )


def build_model(
    config: VaceEConfig, components: dict[str, Any], clip_dim: int | None, guidance_objects: int | None = None
) -> VaceETransformer:
    """The VACE-E model; its guidance head (when guidance_loss_weight > 0) predicts ``guidance_objects`` objects'
    positions besides the hand motion (default max_objects; 0 for a head saved before objects were predicted)."""
    vace = components["transformer"]
    dim = vace.config.num_attention_heads * vace.config.attention_head_dim
    encoder = TaskEmbodimentEncoder(
        model_dim=dim,
        text_dim=components["text_encoder"].config.d_model,
        image_dim=clip_dim,
        width=config.encoder_width,
        layers=config.encoder_layers,
        heads=config.encoder_heads,
        max_hand_motion_length=config.max_hand_motion_length,
        max_object_trajectory_length=config.max_object_trajectory_length,
        max_objects=config.max_objects,
        task_processing=config.vace_e_task_processing,
    )
    return VaceETransformer(
        vace,
        encoder,
        config.vace_e_layers,
        config.enable_vace_e,
        guidance_head=config.guidance_loss_weight > 0,
        guidance_objects=config.max_objects if guidance_objects is None else guidance_objects,
    )


def load_clip(clip_path: str | None, device: torch.device):
    """(CLIPVisionModel, its image processor) from a local transformers directory, or (None, None)."""
    if clip_path is None:
        return None, None
    from transformers import AutoImageProcessor, CLIPVisionModel

    clip = (
        CLIPVisionModel.from_pretrained(clip_path, local_files_only=True)
        .to(device)
        .eval()
        .requires_grad_(False)
    )
    return clip, AutoImageProcessor.from_pretrained(clip_path, local_files_only=True)


class VaceETrainer(Trainer):
    """One stage of VACE-E training. ``init_from``: a finished stage's folder whose weights start this one."""

    marker = TRAIN_CONFIG
    collate_fn = staticmethod(collate_vace_e)
    # a batch without hand motion or objects leaves that modality's encoder unused (see Trainer)
    find_unused_parameters = True

    def __init__(
        self,
        config: VaceEConfig,
        accelerator=None,
        components: dict[str, Any] | None = None,
        init_from: Path | None = None,
    ):
        self.components = components
        self.init_from = init_from
        super().__init__(config, accelerator)

    def build(self):
        config, accelerator = self.config, self.accelerator
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
            accelerator.mixed_precision, torch.float32
        )
        components = self.components or load_diffusers_components(
            config.model_dir,
            WanVACETransformer3DModel,
            dtype,
            config.text_encoder_path,
            config.tokenizer_path,
        )
        device = accelerator.device
        dataset = episode_dataset(config)
        if len(dataset) == 0:
            raise ValueError(f"--dataset_base_path: no usable episode in {config.dataset_base_path}")
        if config.debug or config.verbose_logging:
            sample = dataset[0]
            shapes = {k: tuple(v.shape) for k, v in sample.items() if torch.is_tensor(v)}
            print(
                f"vace-e debug: {len(dataset)} samples of {len(dataset.episodes)} episodes; first sample {shapes}; "
                f"prompt {sample['prompt']!r}"
            )
        clip, processor = load_clip(config.clip_path, device)
        vace = components["transformer"].to(device).requires_grad_(False)
        model = build_model(config, components, None if clip is None else clip.config.hidden_size)
        trainable = config.trainable()
        if "lora" in trainable:
            add_lora(vace, config.lora_rank, lora_module_names(config.lora_target_modules))
        if self.init_from is not None:
            load_stage_weights(model, self.init_from)
        model.requires_grad_(False)
        if "vace_e" in trainable:
            for part in (model.encoder, model.injectors, model.guidance_head):
                if part is not None:
                    part.requires_grad_(True)
        if "dit" in trainable:
            vace.requires_grad_(True)
        if "vace" in trainable:
            vace.vace_blocks.requires_grad_(True)
            vace.vace_patch_embedding.requires_grad_(True)
        if "lora" in trainable:
            for name, parameter in vace.named_parameters():
                parameter.requires_grad_(parameter.requires_grad or ".lora_" in name)
        model.gradient_checkpointing = config.use_gradient_checkpointing
        if config.compile_model:
            vace.compile_repeated_blocks(fullgraph=True)
        vae = components["vae"].to(device).requires_grad_(False)
        text_encoder = components["text_encoder"].to(device).requires_grad_(False)
        pipe = WanVACEPipeline(
            components["tokenizer"], text_encoder, vae, components["scheduler"], transformer=vace
        )
        self.vace_inputs = VaceEInputs(pipe, clip, processor, config.use_reference_image)
        if config.num_epochs is not None:
            per_epoch = math.ceil(
                len(dataset)
                / (config.batch_size * accelerator.num_processes * config.gradient_accumulation_steps)
            )
            config.max_steps = max(1, config.num_epochs * per_epoch)
        self.steps_per_epoch = max(
            1,
            len(dataset)
            // (config.batch_size * accelerator.num_processes * config.gradient_accumulation_steps),
        )
        objective = FlowMatchingObjective(
            shift=config.flow_shift, weighting=config.loss_weighting, sigma_schedule=config.sigma_schedule
        )
        return dataset, VaceETrainingModule(model, self.vace_inputs, objective, config.guidance_loss_weight)

    def export(self, step: int) -> None:
        config, model = self.config, self.raw.model
        root = self.output
        root.mkdir(parents=True, exist_ok=True)
        own = {}
        for prefix, part in (
            ("encoder.", model.encoder),
            ("injectors.", model.injectors),
            ("guidance_head.", model.guidance_head),
        ):
            if part is not None:
                own |= {prefix + k: v.detach().cpu().contiguous() for k, v in part.state_dict().items()}
        write_atomic(root / WEIGHTS, lambda tmp: save_file(own, str(tmp)))
        trainable = config.trainable()
        if "lora" in trainable:
            lora = {k: v.detach().cpu().contiguous() for k, v in lora_state_dict(model.vace).items()}
            write_atomic(root / LORA, lambda tmp: save_file(lora, str(tmp)))
        if "dit" in trainable or "vace" in trainable:
            write_dir_atomic(
                root / "transformer", lambda tmp: model.vace.save_pretrained(tmp, safe_serialization=True)
            )
        clip = self.vace_inputs.clip
        summary = {
            "base_model": str(config.model_dir),
            "clip_path": config.clip_path,
            "model": {
                "vace_e_layers": config.vace_e_layers,
                "enable_vace_e": config.enable_vace_e,
                "vace_e_task_processing": config.vace_e_task_processing,
                "encoder_width": config.encoder_width,
                "encoder_layers": config.encoder_layers,
                "encoder_heads": config.encoder_heads,
                "max_hand_motion_length": config.max_hand_motion_length,
                "max_object_trajectory_length": config.max_object_trajectory_length,
                "max_objects": config.max_objects,
                "image_dim": None if clip is None else clip.config.hidden_size,
                "guidance_head": model.guidance_head is not None,
                "guidance_objects": 0 if model.guidance_head is None else model.guidance_head.max_objects,
                "use_reference_image": config.use_reference_image,
            },
            "lora": {"lora_rank": config.lora_rank, "lora_target_modules": config.lora_target_modules}
            if "lora" in trainable
            else {},
            "transformer_trained": "dit" in trainable or "vace" in trainable,
            "train_args": config.to_dict(),
            "step": step,
        }
        write_atomic(root / TRAIN_CONFIG, lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))

    def after_step(self, step: int, stream) -> None:
        config = self.config
        if not config.validate_every_epochs or config.validation_base_path is None:
            return
        if (
            step % (self.steps_per_epoch * config.validate_every_epochs)
            or not self.accelerator.is_main_process
        ):
            return
        from ._validate import validate

        validate(
            self.raw.model,
            self.vace_inputs,
            config,
            self.output / "validation" / f"step-{step:09d}",
            config.validation_episodes,
        )


def load_stage_weights(model: VaceETransformer, stage_dir: Path) -> None:
    """Loads a finished stage's vace_e.safetensors (+ transformer/ or lora.safetensors) into ``model``."""
    state = load_file(str(Path(stage_dir) / WEIGHTS))
    for prefix, part in (
        ("encoder.", model.encoder),
        ("injectors.", model.injectors),
        ("guidance_head.", model.guidance_head),
    ):
        if part is None:
            continue
        own = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        expected = part.state_dict()
        check_state_dict(
            expected,
            own,
            f"{stage_dir}/{WEIGHTS} ({prefix.rstrip('.')})",
            owner=f"the {prefix.rstrip('.')}",
            # a guidance head saved before it predicted object positions: its object layer starts fresh
            may_lack=[k for k in expected if prefix == "guidance_head." and k.startswith("objects.")],
        )
        part.load_state_dict(own, strict=False)  # checked above
    if (Path(stage_dir) / "transformer").is_dir():
        trained = WanVACETransformer3DModel.from_pretrained(
            Path(stage_dir) / "transformer", local_files_only=True
        )
        missing, unexpected = model.vace.load_state_dict(trained.state_dict(), strict=False)
        if unexpected or any(".lora_" not in k for k in missing):
            raise ValueError(f"{stage_dir}/transformer: weights do not fit this VACE transformer")
    if (Path(stage_dir) / LORA).is_file() and any(".lora_" in n for n, _ in model.vace.named_parameters()):
        load_lora_state_dict(model.vace, load_file(str(Path(stage_dir) / LORA)), str(Path(stage_dir) / LORA))


def run_stages(
    config: VaceEConfig, components: dict[str, Any] | None = None, accelerator=None
) -> dict[str, TrainResult | None]:
    """Runs every stage in order, each in ``<output_path>/<stage>``; finished stages are skipped, an interrupted
    one resumes from its latest checkpoint, and each stage starts from the previous stage's weights."""
    results: dict[str, TrainResult | None] = {}
    previous = None
    # every process runs the stages; only the first touches the stage folders, the others wait for it
    state = PartialState(cpu=not torch.cuda.is_available())  # as the Trainer's Accelerator (see _loop)
    for stage in config.stages():
        out = Path(config.output_path) / stage.name
        if (out / STAGE_DONE).is_file():
            results[stage.name], previous = None, out
            continue
        resume = "latest" if complete_checkpoints(out) else None
        if resume is None and out.exists() and state.is_main_process:
            shutil.rmtree(out)  # started but never checkpointed: nothing trained is lost by starting over
        state.wait_for_everyone()
        stage_config = replace(
            config,
            trainable_models=stage.trainable_models,
            learning_rate=stage.learning_rate,
            num_epochs=stage.num_epochs,
            max_steps=stage.max_steps or config.max_steps,
            output_path=str(out),
            training_stages=None,
            save_full_state=True,
            resume_from=resume,
        )
        trainer = VaceETrainer(
            stage_config, accelerator=accelerator, components=components, init_from=previous
        )
        result = trainer.run()
        summary = {"stage": stage.name, "description": stage.description, "step": result.step,
                   "final_loss": result.losses.get(result.step)}  # fmt: skip
        if state.is_main_process:
            write_atomic(out / STAGE_DONE, lambda tmp, s=summary: tmp.write_text(json.dumps(s, indent=2)))
        state.wait_for_everyone()
        results[stage.name], previous = result, out
    return results


def final_stage_dir(output_path: str | os.PathLike) -> Path:
    """The last finished stage folder of a run (or the folder itself when it is a stage)."""
    root = Path(output_path)
    if (root / TRAIN_CONFIG).is_file():
        return root
    done = (
        sorted((p for p in root.iterdir() if (p / STAGE_DONE).is_file()), key=lambda p: p.stat().st_mtime)
        if root.is_dir()
        else []
    )
    if not done:
        raise FileNotFoundError(
            f"--checkpoint: {root} holds no finished VACE-E stage ({TRAIN_CONFIG} / {STAGE_DONE})"
        )
    return done[-1]


CHECKPOINT_FILES = (".pt", ".pth", ".safetensors", ".bin")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``--checkpoint``: a run or stage folder as it is, or a weights file inside a run (the design note passes
    ``checkpoint.pt``) as the stage folder holding it, whose exported weights are what loads. A file of an earlier
    checkpoint step than the stage's exported one says so (warning): the exported weights load, not that step's."""
    path = Path(path)
    if path.is_dir():
        return path
    if not path.exists():
        raise FileNotFoundError(
            f"--checkpoint: {path} does not exist (a VACE-E run or stage folder, or a file in one)"
        )
    if path.suffix not in CHECKPOINT_FILES:
        raise ValueError(f"--checkpoint: {path}: expected a folder or a {'/'.join(CHECKPOINT_FILES)} file")
    stage = next((p for p in path.resolve().parents if (p / TRAIN_CONFIG).is_file()), None)
    if stage is None:
        raise FileNotFoundError(
            f"--checkpoint: {path} is not inside a VACE-E training output (no {TRAIN_CONFIG} in a folder above it)"
        )
    step_folder = next((p for p in path.resolve().parents if p.parent.name == "checkpoints"), None)
    if step_folder is not None and step_folder.name.startswith("step-"):
        exported = json.loads((stage / TRAIN_CONFIG).read_text()).get("step")
        step = int(step_folder.name.removeprefix("step-"))
        if exported is not None and step != exported:
            warnings.warn(
                f"--checkpoint: {path} is step {step}; kinema loads {stage}'s exported weights of step {exported} "
                f"instead (pass the stage folder, or resume training from step {step} to export it)",
                UserWarning,
                stacklevel=2,
            )
    return stage
