"""ActionCausalInferencePipeline: block-by-block generation steered by actions, with a rolling KV cache.

    for each block b of ``block_size`` latent frames:
        features = _process_action(generated latents so far, first frame of b, action_inputs)   # (B, action_dim)
        modulation = ActionModulationProjection(features)          # (B, f, 6, D), zero at init (adaLN-Zero)
        for sigma in the few denoising steps (1000, 750, 500, 250 warped by the flow shift):
            flow = model(x_b, sigma, cache of earlier blocks, text K/V, modulation)    # block-causal
            x_b = sampler step (Euler on the flow ODE, or x0 + fresh noise)
        model(clean x_b at the context timestep) -> its keys/values committed to the cache
        frames_b = streaming VAE decode of x_b (continuing the decoder's causal cache)

The modulation is added to the time modulation of every block (as adaLN-Zero), so with the zero-initialized
projection the actions change nothing until trained. Frames of block b depend only on blocks <= b. There is no
classifier-free guidance: few-step causal generators are distilled without it. With ``initial_latent`` (the
first image's latent) the rollout is Wan2.2-TI2V image-to-video: latent frame 0 is that latent at every step, at
timestep 0, and receives no action.

Layouts: noise and latents (B, F, C, h, w) as in the action-conditioning guide; video (B, T, 3, H, W) in [0, 1],
T = 4F - 3 (the Wan VAE's 4x temporal compression, frame 0 alone).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from torch import nn

from kinema.conditioning import ActionModulationProjection

from ..modeling._action_modules import ActionSequenceEncoder, MultimodalActionModule
from ..modeling._first_frame import fuse_first_frame
from ..modeling._prompt import WanPromptEncoder
from ..modeling._transformer import WanActionTransformer
from ._attention import RollingKVCache
from ._config import CausalRolloutConfig
from ._model import CausalWanModel
from ._vae import StreamingVAEDecoder

ACTION_INPUT_KEYS = ("action_features", "target_actions", "control_signals")


@dataclass
class RolloutBlock:
    """One generated block. latents (B, f, C, h, w) float32; frames (B, T, 3, H, W) in [0, 1] (None without
    decoding); action_features (B, action_dim) or None; seconds: wall time from the block's start to its latents;
    next_unstarted: the first block whose actions have not been read yet when this block is handed out."""

    index: int
    start_frame: int
    latents: torch.Tensor
    frames: torch.Tensor | None = None
    action_features: torch.Tensor | None = None
    seconds: float = 0.0
    next_unstarted: int = 0
    _ready: Any = field(default=None, repr=False)

    def wait(self) -> RolloutBlock:
        """Blocks until the frames (decoded on a side CUDA stream) are ready; returns self."""
        if self._ready is not None:
            self._ready.synchronize()
            self._ready = None
        return self


@dataclass
class _Run:
    noise: torch.Tensor  # (B, C, F, h, w) float32
    text_kv: list
    rotary_table: tuple[torch.Tensor, torch.Tensor]
    cache: RollingKVCache
    action_inputs: dict[str, Any]
    initial: torch.Tensor | None  # (B, C, 1, h, w)
    decoder: StreamingVAEDecoder | None
    rng: torch.Generator | None
    frames_to_cpu: bool
    overlap_decode: bool
    profile: dict[str, Any] | None


class ActionCausalInferencePipeline:
    """Block-causal, action-conditioned rollout of a Wan transformer (the guide's API).

    args: a :class:`CausalRolloutConfig` (or a mapping / namespace with its fields or Self-Forcing's names).
    generator: the Wan transformer, a diffusers ``WanTransformer3DModel`` (or a :class:`WanActionTransformer`
        without a controller: the causal rollout steers through the adaLN-Zero projection, not the controller).
    text_encoder: a :class:`WanPromptEncoder`, or any callable ``(prompts, device) -> (B, S, Dt)`` states (or a
        (states, lengths) pair); None when prompts are passed as embeddings.
    vae: a diffusers ``AutoencoderKLWan`` (None: only latents can be returned).
    action_module: where action features come from when ``action_inputs`` has no ``action_features`` (one of the
        shipped modules, or any module called on the generated latents; see :meth:`_process_action`).
    action_dim: width of the action features; enable_adaln_zero: build the zero-initialized
        ``ActionModulationProjection`` (False: a plain causal rollout, actions are refused).

    The projection is kept in float32 on ``device`` (it is what trains); ``action_projection`` and
    ``action_module`` are the trainable parts, ``generator`` stays frozen (see ``freeze_generator``).
    """

    def __init__(
        self,
        args,
        device: str | torch.device,
        generator: nn.Module | None = None,
        text_encoder: WanPromptEncoder | Callable | None = None,
        vae: AutoencoderKLWan | None = None,
        action_module: nn.Module | None = None,
        action_dim: int = 512,
        enable_adaln_zero: bool = True,
    ):
        self.config = self.args = CausalRolloutConfig.from_args(args)
        self.device = torch.device(device)
        if generator is None:
            raise ValueError(
                "generator: a Wan transformer is required (load one with load_causal_pipeline(model_dir) or "
                "load_wan_components(model_dir)['transformer'])"
            )
        if isinstance(generator, WanActionTransformer):
            if generator.controller is not None:
                raise ValueError(
                    "generator: a WanActionTransformer with a WanActionController; the causal rollout conditions "
                    "through the adaLN-Zero action projection, not the controller: pass generator.transformer"
                )
            generator = generator.transformer
        if not isinstance(generator, WanTransformer3DModel):
            raise TypeError(
                f"generator: expected a diffusers WanTransformer3DModel, got {type(generator).__name__}"
            )
        if text_encoder is not None and not callable(text_encoder):
            raise TypeError(
                f"text_encoder: expected a WanPromptEncoder(tokenizer, text_encoder) or a callable, got "
                f"{type(text_encoder).__name__}"
            )
        if action_dim < 1:
            raise ValueError(f"action_dim: expected >= 1, got {action_dim}")
        if action_module is not None and not enable_adaln_zero:
            raise ValueError(
                "action_module: its features need the action projection; pass enable_adaln_zero=True"
            )
        module_dim = getattr(action_module, "action_dim", action_dim)
        if module_dim != action_dim:
            raise ValueError(
                f"action_module: produces {module_dim}-wide features, the pipeline's action_dim is {action_dim}"
            )
        self.generator = generator.to(self.device)
        self.model = CausalWanModel(self.generator)
        self.text_encoder = text_encoder
        self.vae = vae.to(self.device) if vae is not None else None
        # a block per decoder call: faster than diffusers' frame-by-frame loop (BENCHMARKS.md)
        self.decoder_options: dict = {"frames_per_call": None, "channels_last": False}
        self.action_dim = action_dim
        self.enable_adaln_zero = enable_adaln_zero
        self.action_projection = (
            ActionModulationProjection(
                action_dim, self.model.hidden_size, num_frames=self.config.block_size, zero_init=True
            ).to(self.device)
            if enable_adaln_zero
            else None
        )
        self.action_module = action_module.to(self.device) if action_module is not None else None
        self.last_profile: dict[str, Any] = {}
        self._text_features: torch.Tensor | None = None

    # ---- public API -----------------------------------------------------------------------------------------
    def inference(
        self,
        noise: torch.Tensor,
        text_prompts: list[str] | str | torch.Tensor,
        action_inputs: dict[str, Any] | None = None,
        return_latents: bool = False,
        profile: bool = False,
        low_memory: bool = False,
        *,
        initial_latent: torch.Tensor | None = None,
        rng: torch.Generator | None = None,
    ):
        """noise (B, F, C, h, w) -> video (B, 4F - 3, 3, H, W) in [0, 1]; with ``return_latents`` (video, latents
        (B, F, C, h, w)), video None when the pipeline has no VAE.

        text_prompts: B prompts (or one string for B = 1), or text-encoder states (B, S, Dt).
        action_inputs: ``action_features`` (B, action_dim) for the whole rollout or (B, num_blocks, action_dim) per
            block; ``target_actions`` (B, >= num_blocks) integer ids, read by an :class:`ActionSequenceEncoder`;
            ``control_signals`` (B, text_dim) or (B, num_blocks, text_dim), the text side of a
            :class:`MultimodalActionModule` (default: the prompt's mean text-encoder state). An input that nothing
            would read (no such module, or ``action_features`` given as well) raises ValueError.
        profile: synchronize and time the phases (``self.last_profile``, also printed).
        low_memory: move the text encoder to the CPU after encoding and every decoded block to the CPU.
        initial_latent: (B, 1, C, h, w) first-image latent (TI2V image-to-video); rng: for the "renoise" sampler
            and a noisy context timestep.
        All inputs are checked before any model work.
        """
        decode = self.vae is not None or not return_latents
        blocks = list(
            self.stream(
                noise,
                text_prompts,
                action_inputs,
                initial_latent=initial_latent,
                rng=rng,
                decode=decode,
                frames_to_cpu=low_memory,
                low_memory=low_memory,
                profile=profile,
            )
        )
        latents = torch.cat([b.latents for b in blocks], dim=1)
        video = torch.cat([b.frames for b in blocks], dim=1) if decode else None
        return (video, latents) if return_latents else video

    def stream(
        self,
        noise: torch.Tensor,
        text_prompts: list[str] | str | torch.Tensor,
        action_inputs: dict[str, Any] | None = None,
        *,
        initial_latent: torch.Tensor | None = None,
        rng: torch.Generator | None = None,
        decode: bool = True,
        frames_to_cpu: bool = False,
        overlap_decode: bool = False,
        low_memory: bool = False,
        profile: bool = False,
    ) -> Iterator[RolloutBlock]:
        """Checks the inputs, encodes the prompt, and returns an iterator of :class:`RolloutBlock`, one per block.

        ``action_inputs`` is read when each block starts, so a caller may fill block k's entry (e.g.
        ``target_actions[:, k]``) while streaming, before asking for block k. ``overlap_decode`` (CUDA only) decodes
        block k on a side stream while block k + 1 is generated; block k >= 1 is then handed out once block k + 1's
        work is queued (its ``next_unstarted`` says so), block 0 as soon as it is decoded. ``frames_to_cpu``
        copies each block's frames to (pinned) host memory.
        """
        batch = self._check_inputs(noise, text_prompts, action_inputs, initial_latent, decode)
        profile_data: dict[str, Any] | None = {"blocks": []} if profile else None
        started = self._sync_time()
        with torch.no_grad():
            text_states = self._encode_text(text_prompts, batch, low_memory)
            text_kv = self.model.text_cache(text_states)
        model = self.model
        frames, height, width = noise.shape[1], noise.shape[3], noise.shape[4]
        h, w = model.token_grid(height, width)
        window = self.config.window_frames
        cache = RollingKVCache(
            model.num_layers,
            h * w,
            self.config.block_size,
            capacity_frames=frames if window is None else min(window, frames),
            window_frames=window,
        )
        run = _Run(
            noise=noise.to(self.device, torch.float32).permute(0, 2, 1, 3, 4),
            text_kv=text_kv,
            rotary_table=model.rotary_table(frames, height, width),
            cache=cache,
            action_inputs=action_inputs if action_inputs is not None else {},
            initial=None
            if initial_latent is None
            else initial_latent.to(self.device, torch.float32).permute(0, 2, 1, 3, 4),
            decoder=StreamingVAEDecoder(self.vae, **self.decoder_options) if decode else None,
            rng=rng,
            frames_to_cpu=frames_to_cpu,
            overlap_decode=overlap_decode and self.device.type == "cuda",
            profile=profile_data,
        )
        if profile_data is not None:
            profile_data["text_s"] = self._sync_time() - started
            profile_data["start"] = started
        return self._rollout(run)

    def _process_action(
        self,
        generated_frames: torch.Tensor | None,
        current_frame_idx: int,
        action_inputs: dict[str, Any] | None,
    ) -> torch.Tensor | None:
        """Action features (B, action_dim) of the block that starts at latent frame ``current_frame_idx``, or None
        (no action modulation for that block). Override it to derive actions another way.

        generated_frames: (B, current_frame_idx, C, h, w) denoised latents of the earlier blocks; None at block 0.
        Default, first that applies: ``action_features`` of ``action_inputs`` (the block's row when per block); an
        :class:`ActionSequenceEncoder` on ``target_actions`` of blocks 0..k; a :class:`MultimodalActionModule` on
        the history and ``control_signals`` (or the prompt's mean state); any other module on the history (None at
        block 0, where there is none); else None.
        """
        inputs = action_inputs or {}
        block = current_frame_idx // self.config.block_size
        features = inputs.get("action_features")
        if features is not None:
            return features if features.ndim == 2 else features[:, block]
        module = self.action_module
        if module is None:
            return None
        if isinstance(module, ActionSequenceEncoder):
            return module(inputs["target_actions"][:, : block + 1].to(self.device))
        if isinstance(module, MultimodalActionModule):
            text = inputs.get("control_signals")
            if text is None:
                text = self._text_features
            elif text.ndim == 3:
                text = text[:, block]
            return module(generated_frames, text.to(self.device))
        if generated_frames is None:
            return None
        return module(generated_frames)

    # ---- the rollout ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _rollout(self, run: _Run) -> Iterator[RolloutBlock]:
        config, model = self.config, self.model
        block_size = config.block_size
        batch, _, frames = run.noise.shape[:3]
        sigmas = config.sigmas().tolist()
        scale = float(config.num_train_timesteps)
        side = torch.cuda.Stream(self.device) if run.overlap_decode else None
        generated: list[torch.Tensor] = []
        pending: RolloutBlock | None = None
        num_blocks = frames // block_size
        for index in range(num_blocks):
            block_start = time.perf_counter()
            start = index * block_size
            first = run.initial is not None and index == 0
            history = torch.cat(generated, dim=2).permute(0, 2, 1, 3, 4) if generated else None
            features = self._process_action(history, start, run.action_inputs)
            modulation = self._action_modulation(features, block_size, zero_first=first)
            rotary = model.rotary(run.rotary_table, slice(start, start + block_size))
            x = run.noise[:, :, start : start + block_size]  # (B, C, f, h, w)
            for sigma, sigma_next in itertools.pairwise(sigmas):
                timesteps = torch.full((batch, block_size), sigma * scale, device=self.device)
                if first:
                    x = fuse_first_frame(x, run.initial)
                    timesteps[:, 0] = 0.0
                flow = model(
                    x, timesteps, run.text_kv, rotary, cache=run.cache, action_modulation=modulation
                ).float()
                x = self._sampler_step(x, flow, sigma, sigma_next, run.rng)
            if first:
                x = fuse_first_frame(x, run.initial)
            generated.append(x)
            if index + 1 < num_blocks:  # re-encode the clean block into the cache for the blocks after it
                context, timesteps = self._context_input(x, batch, first, run.rng)
                model(context, timesteps, run.text_kv, rotary, cache=run.cache, action_modulation=modulation)
                run.cache.commit()
            block = RolloutBlock(
                index, start, x.permute(0, 2, 1, 3, 4), action_features=features, next_unstarted=index + 1
            )
            if run.profile is not None:
                self._sync_time()
            block.seconds = time.perf_counter() - block_start
            if run.decoder is None:
                self._record(run, block, 0.0)
                yield block
                continue
            if side is None:
                decode_start = self._sync_time() if run.profile is not None else 0.0
                block.frames = self._decode(run.decoder, x, run.frames_to_cpu)
                if run.frames_to_cpu and self.device.type == "cuda":  # the non-blocking copy must land first
                    torch.cuda.current_stream(self.device).synchronize()
                if run.profile is not None:
                    self._record(run, block, self._sync_time() - decode_start)
                yield block
                continue
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                block.frames = self._decode(run.decoder, x, run.frames_to_cpu)
                block._ready = torch.cuda.Event()
                block._ready.record(side)
            if index == 0:  # the first frames as early as possible; later blocks overlap with the next one
                self._record(run, block.wait(), float("nan"))
                yield block
                continue
            if pending is not None:
                pending.next_unstarted = index + 1
                self._record(run, pending.wait(), float("nan"))
                yield pending
            pending = block
        if pending is not None:
            pending.next_unstarted = num_blocks
            self._record(run, pending.wait(), float("nan"))
            yield pending
        if run.profile is not None:
            self._finish_profile(run)

    def _sampler_step(
        self, x: torch.Tensor, flow: torch.Tensor, sigma: float, sigma_next: float, rng
    ) -> torch.Tensor:
        """x_sigma -> x_sigma_next given the predicted flow (noise - x0); float32."""
        if self.config.sampler == "euler":
            return x + (sigma_next - sigma) * flow
        x0 = x - sigma * flow
        if sigma_next == 0.0:
            return x0
        noise = torch.randn(x.shape, generator=rng, device=rng.device if rng else x.device).to(x.device)
        return (1 - sigma_next) * x0 + sigma_next * noise

    def _context_input(
        self, x: torch.Tensor, batch: int, first: bool, rng
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoised block as the cache sees it: clean, or noised to ``context_timestep``."""
        t = self.config.context_timestep
        timesteps = torch.full((batch, x.shape[2]), float(t), device=self.device)
        if first:
            timesteps[:, 0] = 0.0
        if t == 0:
            return x, timesteps
        sigma = t / self.config.num_train_timesteps
        noise = torch.randn(x.shape, generator=rng, device=rng.device if rng else x.device).to(x.device)
        noisy = (1 - sigma) * x + sigma * noise
        return (fuse_first_frame(noisy, x[:, :, :1]) if first else noisy), timesteps

    def _action_modulation(
        self, features: torch.Tensor | None, num_frames: int, zero_first: bool = False
    ) -> torch.Tensor | None:
        """features (B, action_dim) -> (B, f, 6, D) float32 added to the time modulation; None when no action."""
        if features is None or self.action_projection is None:
            return None
        if features.ndim != 2 or features.shape[-1] != self.action_dim:
            raise ValueError(
                f"action features of a block: expected (B, {self.action_dim}), got {tuple(features.shape)}"
            )
        dtype = next(self.action_projection.parameters()).dtype
        modulation = self.action_projection(features.to(self.device, dtype), num_frames=num_frames).float()
        if zero_first:  # latent frame 0 is the given image: it receives no action
            modulation = torch.cat([torch.zeros_like(modulation[:, :1]), modulation[:, 1:]], dim=1)
        return modulation

    def configure_decoder(self, *, frames_per_call: int | None = None, channels_last: bool = False) -> None:
        """How each block is decoded (:class:`StreamingVAEDecoder`): ``frames_per_call`` latent frames per decoder
        call (None, the default: the whole block at once; 1: diffusers' frame-by-frame loop) and
        ``channels_last`` convolutions. All give the same frames up to float rounding. The default is the
        fastest measured at the Wan2.2 VAE shape; channels-last did not pay off there and stays off (BENCHMARKS.md,
        benchmarks/causal_rollout.py)."""
        StreamingVAEDecoder.check_frames_per_call(frames_per_call)
        self.decoder_options = {"frames_per_call": frames_per_call, "channels_last": bool(channels_last)}

    def _decode(self, decoder: StreamingVAEDecoder, x: torch.Tensor, to_cpu: bool) -> torch.Tensor:
        video = decoder.decode(x)  # (B, 3, T, H, W) in [-1, 1]
        frames = ((video + 1) / 2).permute(0, 2, 1, 3, 4)  # (B, T, 3, H, W) in [0, 1]
        if not to_cpu or frames.device.type == "cpu":
            return frames
        host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
        return host.copy_(frames, non_blocking=True)

    # ---- inputs ---------------------------------------------------------------------------------------------
    def _encode_text(
        self, text_prompts: list[str] | str | torch.Tensor, batch: int, low_memory: bool
    ) -> torch.Tensor:
        """(B, S, Dt) states in the model's dtype; sets the pooled (B, Dt) text features."""
        if torch.is_tensor(text_prompts):
            states = text_prompts.to(self.device)
            lengths = torch.full((batch,), states.shape[1], device=self.device)
        else:
            prompts = [text_prompts] if isinstance(text_prompts, str) else list(text_prompts)
            offload = low_memory and hasattr(self.text_encoder, "to") and self.device.type != "cpu"
            if offload:
                self.text_encoder.to(self.device)
            encoded = self.text_encoder(prompts, self.device)
            states, lengths = (
                encoded if isinstance(encoded, tuple) else (encoded, torch.full((batch,), encoded.shape[1]))
            )
            states, lengths = states.to(self.device), lengths.to(self.device)
            if offload:  # low_memory: the text encoder leaves the GPU once the prompt is encoded
                self.text_encoder.to("cpu")
                torch.cuda.empty_cache()
        keep = torch.arange(states.shape[1], device=self.device)[None, :] < lengths[:, None]
        summed = (states.float() * keep[..., None]).sum(dim=1)
        self._text_features = summed / lengths.clamp(min=1)[:, None].float()  # (B, Dt)
        return states.to(self.model.dtype)

    def _check_inputs(
        self,
        noise: torch.Tensor,
        text_prompts,
        action_inputs: dict[str, Any] | None,
        initial_latent: torch.Tensor | None,
        decode: bool,
    ) -> int:
        """Every check that can fail, before any model work; returns the batch size."""
        model, config = self.model, self.config
        if not torch.is_tensor(noise) or noise.ndim != 5:
            raise ValueError(
                f"noise: expected a (B, F, C, h, w) tensor, got {getattr(noise, 'shape', type(noise).__name__)}"
            )
        batch, frames, channels, height, width = noise.shape
        if channels != model.in_channels:
            raise ValueError(
                f"noise: {channels} latent channels, the model takes {model.in_channels} (layout (B, F, C, h, w))"
            )
        if frames < 1 or frames % config.block_size:
            raise ValueError(
                f"noise: {frames} latent frames is not a multiple of block_size={config.block_size} "
                "(the block size must divide the frame count)"
            )
        _, p_h, p_w = model.transformer.config.patch_size
        if height % p_h or width % p_w:
            raise ValueError(f"noise: latent size {height}x{width} is not divisible by the patch {p_h}x{p_w}")
        if frames > model.max_frames:
            raise ValueError(
                f"noise: {frames} latent frames exceed the model's rotary table ({model.max_frames} frames)"
            )
        self._check_text(text_prompts, batch)
        self._check_action_inputs(action_inputs, batch, frames // config.block_size)
        if initial_latent is not None:
            expected = (batch, 1, channels, height, width)
            if not torch.is_tensor(initial_latent) or tuple(initial_latent.shape) != expected:
                raise ValueError(
                    f"initial_latent: expected shape {expected}, got {tuple(getattr(initial_latent, 'shape', ()))}"
                )
        if decode:
            if self.vae is None:
                raise ValueError("vae: the pipeline has no VAE to decode with; call with return_latents=True")
            if self.vae.config.z_dim != channels:
                raise ValueError(f"vae: decodes {self.vae.config.z_dim} channels, the noise has {channels}")
        return batch

    def _check_text(self, text_prompts, batch: int) -> None:
        if torch.is_tensor(text_prompts):
            text_dim = self.model.transformer.config.text_dim
            if text_prompts.ndim != 3 or text_prompts.shape[0] != batch or text_prompts.shape[2] != text_dim:
                raise ValueError(
                    f"text_prompts: expected prompts or text-encoder states (B={batch}, S, {text_dim}), got "
                    f"{tuple(text_prompts.shape)}"
                )
            return
        prompts = [text_prompts] if isinstance(text_prompts, str) else text_prompts
        if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("text_prompts: expected a list of strings or a (B, S, Dt) tensor")
        if len(prompts) != batch:
            raise ValueError(f"text_prompts: {len(prompts)} prompts for a batch of {batch} noise samples")
        if self.text_encoder is None:
            raise ValueError(
                "text_encoder: prompts need a text encoder (pass WanPromptEncoder(tokenizer, text_encoder) or "
                "text-encoder states as text_prompts)"
            )

    def _check_action_inputs(self, action_inputs: dict[str, Any] | None, batch: int, num_blocks: int) -> None:
        if action_inputs is None:
            action_inputs = {}
        if not isinstance(action_inputs, dict):
            raise ValueError(f"action_inputs: expected a dict, got {type(action_inputs).__name__}")
        unknown = sorted(set(action_inputs) - set(ACTION_INPUT_KEYS))
        if unknown:
            raise ValueError(
                f"action_inputs: unknown keys {unknown}; expected some of {list(ACTION_INPUT_KEYS)}"
            )
        features = action_inputs.get("action_features")
        if features is not None:
            if self.action_projection is None:
                raise ValueError(
                    "action_features: this pipeline was built with enable_adaln_zero=False (no projection)"
                )
            _check_tensor(
                "action_features",
                features,
                batch,
                self.action_dim,
                num_blocks,
                f"action_dim={self.action_dim}",
            )
        module = self.action_module
        self._check_inputs_are_read(action_inputs, features is not None)
        targets = action_inputs.get("target_actions")
        if targets is not None:
            if not torch.is_tensor(targets) or targets.ndim != 2 or targets.shape[0] != batch:
                raise ValueError(
                    f"target_actions: expected integer ids (B={batch}, num_blocks={num_blocks}), got "
                    f"{tuple(getattr(targets, 'shape', ()))}"
                )
            if isinstance(module, ActionSequenceEncoder):
                module.check_ids(targets, "target_actions")
                if targets.shape[1] < num_blocks:
                    raise ValueError(
                        f"target_actions: {targets.shape[1]} actions for {num_blocks} blocks (one per block)"
                    )
        elif isinstance(module, ActionSequenceEncoder) and features is None:
            raise ValueError(
                f"target_actions: the ActionSequenceEncoder needs the discrete actions, (B={batch}, "
                f"{num_blocks}) integer ids, one per block"
            )
        control = action_inputs.get("control_signals")
        if control is not None and isinstance(module, MultimodalActionModule):
            _check_tensor(
                "control_signals", control, batch, module.text_dim, num_blocks, f"text_dim={module.text_dim}"
            )
        if isinstance(module, MultimodalActionModule) and control is None:
            text_dim = self.model.transformer.config.text_dim
            if module.text_dim != text_dim:
                raise ValueError(
                    f"action_module: the MultimodalActionModule takes {module.text_dim}-wide text features, the "
                    f"prompt states are {text_dim} wide; pass control_signals (B, {module.text_dim})"
                )

    def _check_inputs_are_read(self, action_inputs: dict[str, Any], has_features: bool) -> None:
        """Refuses ``target_actions`` / ``control_signals`` that the default :meth:`_process_action` would never read
        (the rollout would be bitwise the one without them). An overridden hook reads what it likes: not checked."""
        if (
            getattr(self._process_action, "__func__", None)
            is not ActionCausalInferencePipeline._process_action
        ):
            return
        readers = {"target_actions": ActionSequenceEncoder, "control_signals": MultimodalActionModule}
        for key, reader in readers.items():
            if action_inputs.get(key) is None:
                continue
            if has_features:  # action_features come first in _process_action: the module is never called
                raise ValueError(
                    f"{key}: ignored when action_features are given (they replace the action module's features); "
                    "pass one of the two"
                )
            if not isinstance(self.action_module, reader):
                have = "none" if self.action_module is None else type(self.action_module).__name__
                raise ValueError(
                    f"{key}: this pipeline has no {reader.__name__} to read them (its action module: {have}), so "
                    f"they would change nothing; build it with action_module={reader.__name__}(...) or drop {key}"
                )

    # ---- timing ---------------------------------------------------------------------------------------------
    def _sync_time(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _record(self, run: _Run, block: RolloutBlock, decode_s: float) -> None:
        if run.profile is None:
            return
        now = self._sync_time()
        run.profile["blocks"].append(
            {"index": block.index, "generate_s": block.seconds, "decode_s": decode_s}
        )
        run.profile.setdefault("first_frame_s", now - run.profile["start"])
        run.profile["end"] = now

    def _finish_profile(self, run: _Run) -> None:
        data = run.profile
        total = data.get("end", self._sync_time()) - data.pop("start")
        data.pop("end", None)
        data["total_s"] = total
        self.last_profile = data
        blocks = data["blocks"]
        print(
            f"profile: text {data['text_s']:.3f} s, {len(blocks)} blocks, first frames after "
            f"{data.get('first_frame_s', float('nan')):.3f} s, total {total:.3f} s"
        )
        for entry in blocks:
            print(
                f"  block {entry['index']}: generate {entry['generate_s']:.3f} s, decode {entry['decode_s']:.3f} s"
            )


def _check_tensor(name: str, value, batch: int, width: int, num_blocks: int, width_name: str) -> None:
    """(B, width) for the whole rollout or (B, num_blocks, width) per block, finite."""
    if not torch.is_tensor(value) or value.ndim not in (2, 3):
        raise ValueError(
            f"{name}: expected a (B, {width}) or (B, num_blocks, {width}) tensor, got "
            f"{tuple(getattr(value, 'shape', ())) or type(value).__name__}"
        )
    if value.shape[-1] != width:
        raise ValueError(
            f"{name}: expected width {width_name}, got {value.shape[-1]} (shape {tuple(value.shape)})"
        )
    if value.shape[0] != batch:
        raise ValueError(f"{name}: batch {value.shape[0]}, the noise has batch {batch}")
    if value.ndim == 3 and value.shape[1] != num_blocks:
        raise ValueError(f"{name}: {value.shape[1]} per-block rows for {num_blocks} blocks")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name}: holds NaN or Inf")
