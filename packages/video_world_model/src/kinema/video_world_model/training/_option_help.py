"""The ``--help`` of the training commands: a group and a sentence per option, grouped as DiffSynth-Studio's Wan
training script groups them (dataset, model, training, output, LoRA, gradient), plus kinema's own groups.

:func:`kinema.video_world_model.training._loop_config.add_config_arguments` reads :data:`OPTION_HELP`; defaults and choices
are added to each line from the config class itself, so they cannot drift from the code.
"""

from __future__ import annotations

from ..modeling._controller import ACTION_CONTROLLER_CONFIGS, INJECTION_TYPES
from ..modeling._flow_matching import PREDICTIONS, SIGMA_SCHEDULES, WEIGHTINGS

GROUPS = (
    "config",
    "dataset",
    "model",
    "action controller",
    "LoRA",
    "flow matching",
    "training",
    "gradient and memory",
    "output and checkpoints",
    "logging",
)

# option -> (group, help). Options of other training commands (VACE-E) that are absent here keep the help their
# dataclass field carries, in the group "options".
# fmt: off
OPTION_HELP: dict[str, tuple[str, str]] = {
    "config": ("config", "YAML or JSON file of these options; flags given on the command line override it"),
    # dataset
    "dataset_base_path": ("dataset", "folder of the clips (and metadata.csv unless --dataset_metadata_path)"),
    "dataset_metadata_path": ("dataset", "CSV of the clips: video, prompt, action (default <base>/metadata.csv)"),
    "data_file_keys": ("dataset", "comma-separated CSV columns that name media files (as DiffSynth-Studio)"),
    "dataset_repeat": ("dataset", "times each clip appears per epoch"),
    "dataset_num_workers": ("dataset", "DataLoader worker processes (0: load in the training process)"),
    "cache_dir": ("dataset", "train on latents and text embeddings written by `kinema-wm cache` (no VAE or text "
                  "encoder is loaded)"),
    "dataset_shards": ("dataset", "WebDataset shards written by `kinema-data shard`: a folder, a brace pattern "
                       "or a pipe: command (each process reads its own shards; see docs/training.md)"),
    "dataset_shards_index": ("dataset", "the shards' index.json on local disk (default: beside local shards; "
                             "needed for remote ones)"),
    "dataset_shuffle_buffer": ("dataset", "samples each DataLoader worker shuffles among (0: the shard order "
                               "from --seed and the epoch only)"),
    "height": ("dataset", "frame height in pixels, a multiple of 32 (default: from the clip and --max_pixels)"),
    "width": ("dataset", "frame width in pixels, a multiple of 32 (default: from the clip and --max_pixels)"),
    "num_frames": ("dataset", "frames per sample, 4n+1 (81: 21 latent frames, 20 actions)"),
    "max_pixels": ("dataset", "largest height x width when --height/--width are not given"),
    "dataset_window": ("dataset", "which num_frames of a longer clip a sample takes: first, random (a start per "
                       "sample and epoch from --seed: the same after a resume) or all (every window); "
                       "default random for train, all for cache"),
    # model
    "model_dir": ("model", "local Wan2.2-TI2V-5B directory, diffusers or original layout (nothing is "
                  "downloaded)"),
    "model_id_with_origin_paths": ("model", "the reference script's 'DIR:pattern,...' form; only local "
                                   "directories, all the same one"),
    "tokenizer_path": ("model", "tokenizer directory replacing the model's"),
    "text_encoder_path": ("model", "UMT5 text encoder directory replacing the model's"),
    "vae_path": ("model", "Wan2.2 VAE directory replacing the model's"),
    "initialize_model_on_cpu": ("model", "build the transformer on the CPU first (low GPU memory at start-up)"),
    "trainable_models": ("training", "comma-separated: action_controller, lora"),
    # action controller
    "action_controller_config": ("action controller", "controller preset (sizes of the action encoder and "
                                 "injectors)"),
    "action_injection_type": ("action controller", "how actions enter each block (default: the preset's); "
                              "cross_attn_frame with one key is a per-frame bias, see the README"),
    "action_initial_scale": ("action controller", "initial output scale of the injectors (0: the backbone's "
                             "output is unchanged at step 0; default: the preset's)"),
    "action_window": ("action controller", "cross_attn_frame: attend to the actions of frames f-r..f+r "
                      "(default 0: the frame's own)"),
    "action_controller_checkpoint": ("action controller", "start from this action_controller.safetensors (or a "
                                     "checkpoint's trainable.safetensors)"),
    # LoRA
    "lora_base_model": ("LoRA", "the model LoRA goes on: dit (the transformer; set when lora is trainable)"),
    "lora_target_modules": ("LoRA", "comma-separated: the reference's q,k,v,o,ffn.0,ffn.2 or diffusers' names"),
    "lora_rank": ("LoRA", "rank (alpha = rank: scale 1)"),
    "lora_checkpoint": ("LoRA", "start from this lora.safetensors"),
    # flow matching
    "flow_shift": ("flow matching", "shift of the training sigmas (Wan2.2-TI2V: 5; Wan2.1/VACE: 3)"),
    "sigma_schedule": ("flow matching", "train: the scheduler's training sigmas, as DiffSynth-Studio (smallest "
                       "0.005 at shift 5); inference: set_timesteps' sigmas, shifted twice at the low end "
                       "(kinema <= 0.4)"),
    "loss_weighting": ("flow matching", "diffsynth: DiffSynth-Studio's bell over timesteps (mean 1); none; or "
                       "diffusers' SD3 weightings sigma_sqrt, cosmap"),
    "prediction_type": ("flow matching", "what the transformer predicts: flow (noise - x0, Wan's) or sample (x0: "
                        "small models trained from scratch)"),
    "min_timestep_boundary": ("flow matching", "train only sigmas from this fraction of the descending schedule "
                              "(0: from pure noise)"),
    "max_timestep_boundary": ("flow matching", "... up to this fraction (1: to the cleanest)"),
    # training
    "learning_rate": ("training", "AdamW learning rate (after warm-up)"),
    "lr_warmup_ratio": ("training", "fraction of --max_steps of linear warm-up"),
    "lr_min_lr": ("training", "learning rate at the end of the cosine decay (equal to --learning_rate: constant)"),
    "weight_decay": ("training", "AdamW weight decay"),
    "max_grad_norm": ("training", "clip the gradient norm to this"),
    "max_steps": ("training", "optimizer steps"),
    "batch_size": ("training", "clips per process per micro-batch"),
    "gradient_accumulation_steps": ("training", "micro-batches per optimizer step"),
    "mixed_precision": ("training", "autocast precision on CUDA (trained weights stay fp32, frozen ones in it); "
                        "ignored on the CPU"),
    "seed": ("training", "seed of initial weights, data order, windows and noise (a resume repeats them)"),
    "max_bad_steps": ("training", "stop after this many consecutive NaN/Inf losses (the last checkpoint stays)"),
    # gradient and memory
    "use_gradient_checkpointing": ("gradient and memory", "recompute each transformer block in the backward "
                                   "pass (less memory, ~30%% more compute)"),
    "use_gradient_checkpointing_offload": ("gradient and memory", "keep checkpointed activations on the CPU"),
    # output and checkpoints
    "output_path": ("output and checkpoints", "run folder: exported weights, config and checkpoints/"),
    "save_steps": ("output and checkpoints", "export (and checkpoint, with --save_full_state) every this many "
                   "steps"),
    "save_full_state": ("output and checkpoints", "also save optimizer, schedule, data position and RNG so that "
                        "--resume_from continues exactly"),
    "resume_from": ("output and checkpoints", "'latest' or a checkpoints/step-N folder of --output_path"),
    "max_checkpoints": ("output and checkpoints", "keep only the newest this many checkpoints"),
    # logging
    "log_steps": ("logging", "log the loss every this many steps"),
    "use_wandb": ("logging", "log to Weights & Biases (offline without credentials)"),
    "wandb_project": ("logging", "W&B project"),
    "wandb_run_name": ("logging", "W&B run name"),
}
# fmt: on

# option -> allowed values, shown in --help and enforced by argparse
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "action_controller_config": tuple(sorted(ACTION_CONTROLLER_CONFIGS)),
    "action_injection_type": INJECTION_TYPES,
    "dataset_window": ("first", "random", "all"),
    "loss_weighting": WEIGHTINGS,
    "mixed_precision": ("no", "bf16", "fp16"),
    "prediction_type": PREDICTIONS,
    "sigma_schedule": SIGMA_SCHEDULES,
}
