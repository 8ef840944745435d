"""HybridPolicyModel: ACT's observation encoder, a style latent z by variant, and a diffusion denoiser over the
action chunk. Sections in the order data flows: normalization, observation, style latent (B: f(obs); C:
posterior and conditional prior), denoiser, loss, sampling.

B batch, N cameras, D model width, S encoder tokens, C chunk steps, A action dims, L latent dims, K samples.
"""

from __future__ import annotations

import torch
from torch import nn

from kinema.act_policy import Encoder, sine_embedding_1d

from ._config import HybridConfig, check_sampling_steps
from ._denoiser import Denoiser
from ._diffusion import (
    ddim_plan,
    ddim_update,
    reverse_diffusion,
    sampling_scheduler,
    training_scheduler,
    training_target,
)
from ._observation import ObservationEncoder
from ._schedules import free_bits_kl, gaussian_kl

_LOGVAR_RANGE = (-12.0, 6.0)  # keeps exp(logvar) finite in fp32 and bf16
_MIN_HALF_RANGE = (
    1e-2  # an action dim that never moves is mapped with this half range instead of dividing by ~0
)


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_dim)
    )


class PosteriorEncoder(nn.Module):
    """q(z | a, obs): ACT's CVAE encoder over [CLS, obs, action chunk], with the observation given as the pooled
    encoder tokens. action (B, C, A) normalized, obs (B, D), is_pad (B, C) -> mu, logvar (B, L)."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        c = config
        d = c.dim_model
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.obs_proj = nn.Linear(d, d)
        self.action_proj = nn.Linear(c.action_dim, d)
        self.encoder = Encoder(c.n_posterior_layers, d, c.n_heads, c.dim_feedforward, c.dropout, c.pre_norm)
        for parameter in self.encoder.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        self.out = nn.Linear(d, 2 * c.latent_dim)
        self.register_buffer("pos", sine_embedding_1d(2 + c.chunk_size, d), persistent=False)

    def forward(
        self, action: torch.Tensor, obs: torch.Tensor, is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = action.shape[0]
        tokens = torch.cat(
            [self.cls.expand(batch, -1, -1), self.obs_proj(obs).unsqueeze(1), self.action_proj(action)], dim=1
        )  # (B, 2 + C, D)
        keep = torch.cat([torch.ones(batch, 2, dtype=torch.bool, device=action.device), ~is_pad], dim=1)
        out = self.encoder(tokens, self.pos.to(tokens.dtype), mask=keep[:, None, None, :])
        mu, logvar = self.out(out[:, 0]).float().chunk(2, dim=-1)  # (B, L) each
        return mu, logvar.clamp(*_LOGVAR_RANGE)


class HybridPolicyModel(nn.Module):
    """The ACT + diffusion hybrid of :class:`HybridConfig` (variants A, B, C).

    Batches hold RAW values (the model normalizes with the statistics it holds as buffers; set them with
    :meth:`set_normalization`): ``image`` uint8 (B, N, H, W, 3), ``qpos`` (B, D_s),
    ``environment_state`` (B, E) when used, and for training ``action`` (B, C, A) and ``is_pad`` (B, C).

    - :meth:`compute_loss` -> (loss, terms): diffusion MSE on the prediction type's target, plus for C
      beta(step) * KL(q || p) with free bits.
    - :meth:`sample` -> raw chunks (B, C, A): z ~ p(z | obs) (C), z = f(obs) (B) or none (A), then reverse
      diffusion with the config's sampler and step count (or the ones given).
    """

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.config = c = config
        d = c.dim_model
        # normalization statistics (identity until set_normalization)
        self.register_buffer("qpos_mean", torch.zeros(c.state_dim))
        self.register_buffer("qpos_std", torch.ones(c.state_dim))
        self.register_buffer("environment_state_mean", torch.zeros(c.environment_state_dim))
        self.register_buffer("environment_state_std", torch.ones(c.environment_state_dim))
        self.register_buffer("action_min", -torch.ones(c.action_dim))
        self.register_buffer("action_max", torch.ones(c.action_dim))

        self.observation = ObservationEncoder(c)
        self.style_net = self.prior = self.posterior = self.z_embed = None
        if c.variant == "B":
            self.style_net = _mlp(d, d, c.latent_dim)  # z = f(obs)
        elif c.variant == "C":
            self.prior = _mlp(d, d, 2 * c.latent_dim)  # p(z | obs): mu, logvar
            self.posterior = PosteriorEncoder(c)  # q(z | a, obs)
        if c.uses_latent:
            self.z_embed = _mlp(c.latent_dim, d, d)  # added to the timestep embedding, into adaLN-Zero
        self.denoiser = Denoiser(
            c.action_dim, c.chunk_size, d, c.n_heads, c.dim_feedforward, c.n_denoiser_layers, c.dropout
        )
        self.noise_scheduler = training_scheduler(c)
        self.beta_schedule = c.beta_schedule()
        self._samplers: dict = {}  # one inference scheduler per sampler name, reused (set_timesteps resets it)
        self._ddim_plans: dict[int, tuple] = {}  # ddim_plan per step count
        self._compiled: dict | None = None  # the compiled query functions, after compile_inference

    # ----------------------------------------------------------------------------------------- normalization

    def set_normalization(self, stats: dict) -> None:
        """qpos / environment_state mean and std, action min and max, from kinema.robot_data statistics."""
        c = self.config
        wanted = {"qpos": ("mean", "std", c.state_dim), "action": ("min", "max", c.action_dim)}
        if c.use_environment_state:
            wanted["environment_state"] = ("mean", "std", c.environment_state_dim)
        for name, (first, second, dim) in wanted.items():
            if name not in stats:
                raise ValueError(f"stats: missing the field {name!r} the model needs (has {sorted(stats)})")
            for key in (first, second):
                value = torch.as_tensor(stats[name][key], dtype=torch.float32).reshape(-1)
                if value.shape != (dim,):
                    raise ValueError(f"stats[{name!r}][{key!r}]: expected {dim} values, got {value.numel()}")
                getattr(self, f"{name}_{key}").copy_(value)

    def _action_centre_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        centre = (self.action_max + self.action_min) / 2
        half = ((self.action_max - self.action_min) / 2).clamp_min(_MIN_HALF_RANGE)
        return centre, half

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """Raw (..., A) -> [-1, 1] over the training data's range."""
        centre, half = self._action_centre_scale()
        return (action - centre) / half

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        centre, half = self._action_centre_scale()
        return action * half + centre

    # ------------------------------------------------------------------------------------------ observation

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """memory (B, S, D), its pos (S, D) and the pooled observation (B, D) (mean over tokens)."""
        c = self.config
        qpos = (batch["qpos"].float() - self.qpos_mean) / self.qpos_std
        env = None
        if c.use_environment_state:
            env = (
                batch["environment_state"].float() - self.environment_state_mean
            ) / self.environment_state_std
        images = batch.get("image")
        if images is None:
            raise ValueError(
                f"batch['image']: missing; the model was built for cameras {list(c.camera_names)}"
            )
        memory, pos = self.observation(images, qpos, env)
        return memory, pos, memory.mean(dim=1)

    # ----------------------------------------------------------------------------------------- style latent

    def prior_params(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Variant C: p(z | obs) as mu, logvar (B, L)."""
        mu, logvar = self.prior(pooled).float().chunk(2, dim=-1)
        return mu, logvar.clamp(*_LOGVAR_RANGE)

    def infer_z(
        self,
        pooled: torch.Tensor,
        *,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | None:
        """z at inference: None (A), f(obs) (B), or a sample of p(z | obs) with its std times ``temperature``
        (C; default the config's ``z_temperature``; 0 gives the prior mean). (B, L)."""
        c = self.config
        if c.variant == "A":
            return None
        if c.variant == "B":
            return self.style_net(pooled).float()
        mu, logvar = self.prior_params(pooled)
        temperature = c.z_temperature if temperature is None else temperature
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + temperature * (logvar / 2).exp() * eps

    def _style(self, z: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        if self.z_embed is None or z is None:
            return None  # variant A: no latent input at all
        return self.z_embed(z.to(dtype))

    # ------------------------------------------------------------------------------------------------ loss

    def compute_loss(self, batch: dict, step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, {name: detached scalar}) for a batch with ``action`` and ``is_pad``; ``step`` sets beta.

        Padded steps of the target hold the episode's last action (Diffusion Policy's padding), so the denoiser
        learns to stop there; the posterior masks them, as ACT's CVAE encoder does."""
        c = self.config
        memory, pos, pooled = self.encode(batch)
        clean = self.normalize_action(batch["action"].float())  # (B, C, A) in [-1, 1]
        b = clean.shape[0]
        terms: dict[str, torch.Tensor] = {}
        z = None
        if c.variant == "B":
            z = self.style_net(pooled)
        elif c.variant == "C":
            mu_q, logvar_q = self.posterior(clean.to(memory.dtype), pooled, batch["is_pad"])
            mu_p, logvar_p = self.prior_params(pooled)
            z = mu_q + (logvar_q / 2).exp() * torch.randn_like(mu_q)  # reparameterization
            kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)  # (B, L)
            terms["kl"] = kl.sum(-1).mean()
            terms["kl_free_bits"] = free_bits_kl(kl, c.free_bits)
            terms["beta"] = torch.tensor(self.beta_schedule(step))
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, c.num_train_timesteps, (b,), device=clean.device)
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        target = training_target(self.noise_scheduler, clean, noise, timesteps)
        output = self.denoiser(noisy.to(memory.dtype), timesteps, memory, pos, self._style(z, memory.dtype))
        terms["diffusion"] = (output.float() - target).pow(2).mean()
        loss = terms["diffusion"]
        if c.variant == "C":
            loss = loss + self.beta_schedule(step) * terms["kl_free_bits"]
        terms["loss"] = loss
        return loss, {k: v.detach() for k, v in terms.items()}

    # -------------------------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(
        self,
        batch: dict,
        *,
        z: torch.Tensor | None = None,
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        z_temperature: float | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw action chunks (B, C, A) (call in eval mode). ``z`` (B, L) replaces the inferred latent (B, C);
        variant A has no latent input, so ``z`` changes nothing there. ``noise`` (B, C, A) fixes the starting
        noise; ``generator`` seeds z and the noise."""
        c = self.config
        steps = check_sampling_steps(
            c.num_inference_steps if num_inference_steps is None else num_inference_steps,
            c.num_train_timesteps,
        )
        name = c.sampler if sampler is None else sampler
        if self._compiled is not None and name == "ddim":
            return self._sample_ddim_graph(batch, z, steps, z_temperature, generator, noise)
        encode, denoiser = self.encode, self.denoiser
        if self._compiled is not None:
            encode, denoiser = self._compiled["encode"], self._compiled["denoiser"]
            torch.compiler.cudagraph_mark_step_begin()  # a new query: earlier graph outputs may be reused
        memory, pos, pooled = encode(batch)
        if z is None:
            z = self.infer_z(pooled, temperature=z_temperature, generator=generator)
        elif c.uses_latent and tuple(z.shape) != (memory.shape[0], c.latent_dim):
            raise ValueError(f"z: expected ({memory.shape[0]}, {c.latent_dim}), got {tuple(z.shape)}")
        style = self._style(z, memory.dtype)

        def denoise(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            return denoiser(x, timesteps, memory, pos, style)

        if name not in self._samplers:
            self._samplers[name] = sampling_scheduler(c, name)
        clean = reverse_diffusion(
            denoise,
            self._samplers[name],
            (memory.shape[0], c.chunk_size, c.action_dim),
            steps,
            device=memory.device,
            dtype=memory.dtype,
            generator=generator,
            noise=noise,
        )
        return self.unnormalize_action(clean.clamp(-1, 1))

    def compile_inference(self, mode: str = "reduce-overhead") -> HybridPolicyModel:
        """torch.compile the query for fixed input shapes; "reduce-overhead" replays it as CUDA graphs, which
        removes the kernel-launch and Python cost that dominates a batch-1 query. With the DDIM sampler the
        whole query (encoder, latent, every reverse step) is one graph: the DDIM update runs as tensor
        arithmetic on the diffusers scheduler's constants (:func:`ddim_update`, tested equal to
        ``DDIMScheduler.step``). Other samplers compile the encoder and the denoiser and keep the diffusers
        scheduler eager between steps. The same generator gives the same chunk as the eager path.
        Training and :meth:`compute_loss` are not affected."""
        if mode not in ("default", "reduce-overhead", "max-autotune"):
            raise ValueError(f"mode: expected 'default', 'reduce-overhead' or 'max-autotune', got {mode!r}")
        self._compiled = {
            "ddim": torch.compile(self.ddim_query, mode=mode, dynamic=False),
            "encode": torch.compile(self.encode, mode=mode, dynamic=False),
            "denoiser": torch.compile(self.denoiser, mode=mode, dynamic=False),
        }
        return self

    def ddim_query(
        self,
        batch: dict,
        noise: torch.Tensor,
        z: torch.Tensor | None,
        z_noise: torch.Tensor | None,
        temperature: float,
        plan: tuple[tuple[int, float, float], ...],
    ) -> torch.Tensor:
        """The DDIM query without the scheduler object or random draws (what :meth:`compile_inference` captures):
        observation -> z (given, f(obs), or mu + temperature * sigma * ``z_noise`` from the prior) -> the DDIM
        steps of ``plan`` (:func:`ddim_plan`) from ``noise`` (B, C, A). Returns the clean chunk (B, C, A),
        normalized units."""
        c = self.config
        memory, pos, pooled = self.encode(batch)
        if z is None and c.variant == "B":
            z = self.style_net(pooled).float()
        elif z is None and c.variant == "C":
            mu, logvar = self.prior_params(pooled)
            z = mu + temperature * (logvar / 2).exp() * z_noise
        style = self._style(z, memory.dtype)
        clip = 1.0 if c.clip_sample else None  # the schedulers' clip_sample_range
        x = noise.float()
        for t, alpha, alpha_prev in plan:
            timesteps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            output = self.denoiser(x.to(memory.dtype), timesteps, memory, pos, style).float()
            x = ddim_update(x, output, alpha, alpha_prev, c.prediction_type, clip)
        return x

    def ddim_plan(self, num_steps: int) -> tuple[tuple[int, float, float], ...]:
        """:func:`ddim_plan` of this model's DDIM sampler (cached per step count)."""
        if num_steps not in self._ddim_plans:
            self._ddim_plans[num_steps] = tuple(ddim_plan(sampling_scheduler(self.config, "ddim"), num_steps))
        return self._ddim_plans[num_steps]

    def _sample_ddim_graph(self, batch, z, steps, z_temperature, generator, noise) -> torch.Tensor:
        """:meth:`sample` through the compiled :meth:`ddim_query`; random draws in the eager path's order."""
        c = self.config
        inputs = {k: v for k, v in batch.items() if k in ("image", "qpos", "environment_state")}
        rows = inputs["qpos"].shape[0]
        device = inputs["qpos"].device
        if z is not None and c.uses_latent and tuple(z.shape) != (rows, c.latent_dim):
            raise ValueError(f"z: expected ({rows}, {c.latent_dim}), got {tuple(z.shape)}")
        z_noise = None
        if z is None and c.variant == "C":
            z_noise = torch.randn((rows, c.latent_dim), generator=generator, device=device)
        if noise is None:
            noise = torch.randn((rows, c.chunk_size, c.action_dim), generator=generator, device=device)
        plan = self.ddim_plan(steps)  # constants of the graph (one graph per step count)
        temperature = float(c.z_temperature if z_temperature is None else z_temperature)
        torch.compiler.cudagraph_mark_step_begin()
        clean = self._compiled["ddim"](inputs, noise.to(device), z, z_noise, temperature, plan)
        return self.unnormalize_action(clean.clamp(-1, 1))

    def predict(self, batch: dict, **options) -> torch.Tensor:
        """The policy's query: :meth:`sample` (``action`` / ``is_pad`` in the batch are ignored)."""
        inputs = {k: v for k, v in batch.items() if k not in ("action", "is_pad")}
        return self.sample(inputs, **options)

    # ------------------------------------------------------------------------------------------- optimizer

    def parameter_groups(self, lr: float, lr_backbone: float, weight_decay: float) -> list[dict]:
        """AdamW groups: the ResNet at ``lr_backbone``, everything else at ``lr``."""
        backbone, rest = [], []
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                (backbone if name.startswith("observation.backbone.") else rest).append(parameter)
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "main"}]
        if backbone:
            groups.append(
                {"params": backbone, "lr": lr_backbone, "weight_decay": weight_decay, "name": "backbone"}
            )
        return groups
