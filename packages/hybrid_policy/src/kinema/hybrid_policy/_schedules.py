"""The KL weight beta over training (constant, linear warm-up, cyclical), the Gaussian KL and free bits.

B batch, L latent dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULE_KINDS = ("constant", "linear", "cyclical")
_GRAMMAR = (
    '"BETA", "constant:BETA", "linear:BETA:STEPS" (0 -> BETA over STEPS steps, then BETA) or '
    '"cyclical:BETA:PERIOD[:RATIO]" (every PERIOD steps: 0 -> BETA over the first RATIO of the period, default '
    "0.5, then BETA)"
)


@dataclass(frozen=True)
class BetaSchedule:
    """beta(step) for the KL term of variant C.

    - ``constant``: beta;
    - ``linear``: beta * min(1, step / steps), the usual KL warm-up (Bowman et al. 2016);
    - ``cyclical``: with r = (step mod steps) / steps, beta * min(1, r / ratio): the cyclical annealing of Fu et
      al. 2019 (ratio 0.5: half of each cycle rising, half at beta), which lets the posterior re-learn to carry
      information at the start of every cycle.
    """

    kind: str
    beta: float
    steps: int = 0
    ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"kl schedule: unknown kind {self.kind!r}; expected one of {SCHEDULE_KINDS}")
        if not math.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"kl schedule: beta must be a finite number >= 0, got {self.beta!r}")
        if self.kind != "constant" and self.steps < 1:
            raise ValueError(f"kl schedule: {self.kind} needs a step count >= 1, got {self.steps!r}")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"kl schedule: ratio must be in (0, 1], got {self.ratio!r}")

    @classmethod
    def parse(cls, text) -> BetaSchedule:
        """A schedule from its text (see the module's grammar); a ValueError quoting the text otherwise."""
        if isinstance(text, BetaSchedule):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"kl schedule: expected text such as {_GRAMMAR}; got {text!r}")
        parts = [p.strip() for p in text.strip().split(":")]
        try:
            if len(parts) == 1:
                return cls("constant", float(parts[0]))
            kind, values = parts[0].lower(), parts[1:]
            if kind == "constant" and len(values) == 1:
                return cls("constant", float(values[0]))
            if kind == "linear" and len(values) == 2:
                return cls("linear", float(values[0]), _integer(values[1]))
            if kind == "cyclical" and len(values) in (2, 3):
                ratio = float(values[2]) if len(values) == 3 else 0.5
                return cls("cyclical", float(values[0]), _integer(values[1]), ratio)
        except ValueError as error:
            raise ValueError(f"kl schedule {text!r} does not parse ({error}); expected {_GRAMMAR}") from None
        raise ValueError(f"kl schedule {text!r} does not parse; expected {_GRAMMAR}")

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return self.beta
        if self.kind == "linear":
            return self.beta * min(1.0, step / self.steps)
        position = (step % self.steps) / self.steps
        return self.beta * min(1.0, position / self.ratio)

    def __str__(self) -> str:
        beta = repr(self.beta)
        if self.kind == "constant":
            return f"constant:{beta}"
        if self.kind == "linear":
            return f"linear:{beta}:{self.steps}"
        return f"cyclical:{beta}:{self.steps}:{self.ratio!r}"


def _integer(text: str) -> int:
    value = float(text)
    if not value.is_integer():
        raise ValueError(f"a step count must be a whole number, got {text!r}")
    return int(value)


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per latent dim, diagonal Gaussians: (B, L) each ->
    (B, L) = 0.5 * (logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1)."""
    mu_q, logvar_q, mu_p, logvar_p = (t.float() for t in (mu_q, logvar_q, mu_p, logvar_p))
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1)


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term with free bits (Kingma et al. 2016): per latent dim, the batch-mean KL is raised to at least
    ``free_bits`` nats, then summed over dims. kl (B, L) -> scalar. ``free_bits`` 0: sum over L, mean over B.

    A dim whose KL is under the floor gets no gradient from this term, so the posterior may put up to
    ``free_bits`` nats per dim into z without being pulled back toward the prior (against posterior collapse).
    """
    if free_bits < 0:
        raise ValueError(f"free_bits: expected >= 0 nats per latent dim, got {free_bits}")
    per_dim = kl.mean(0)  # (L,)
    if free_bits > 0:
        per_dim = per_dim.clamp_min(free_bits)
    return per_dim.sum()
