"""ACT's losses and the contrastive coordinate losses (the relative one of issue 21, the earlier hinge).

B batch, C chunk steps, A action dims, L latent dims, E coordinate dims.
"""

from __future__ import annotations

import torch


def masked_l1(predicted: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    """ACT's reconstruction loss: mean over all B * C * A entries of |predicted - target|, padded steps counted
    as 0 (the original's ``(l1 * ~is_pad.unsqueeze(-1)).mean()``).

    predicted, target (B, C, A); is_pad (B, C) bool, True past the episode end -> scalar.
    """
    if predicted.shape != target.shape or is_pad.shape != predicted.shape[:2]:
        raise ValueError(
            f"masked_l1: expected predicted and target (B, C, A) and is_pad (B, C), got {tuple(predicted.shape)}, "
            f"{tuple(target.shape)}, {tuple(is_pad.shape)}"
        )
    error = (predicted.float() - target.float()).abs()  # (B, C, A)
    return (error * (~is_pad).unsqueeze(-1)).mean()


def kl_divergence(mu: torch.Tensor, log_sigma_x2: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the L latent dims, averaged over the batch.

    mu, log_sigma_x2 (B, L) -> scalar: mean_b sum_l -0.5 * (1 + log sigma^2 - mu^2 - sigma^2).
    """
    mu, log_sigma_x2 = mu.float(), log_sigma_x2.float()
    return (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1).mean()


def _pairwise_rms(flat: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, K) -> (B, B) RMS distance sqrt(mean_k (x_i - x_j)^2 + eps), from the Gram matrix: no (B, B, K)
    difference tensor for large batches."""
    norms = flat.pow(2).sum(-1)  # (B,)
    squared = (norms.unsqueeze(1) + norms.unsqueeze(0) - 2 * flat @ flat.T).clamp_min(0) / flat.shape[1]
    return (squared + eps).sqrt()


def contrastive_coordinate_loss(
    actions: torch.Tensor,
    coordinates: torch.Tensor,
    margin: float,
    threshold: float,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Penalizes predicted chunks that are too alike for coordinates that differ.

    For every unordered pair (i, j) of the batch whose coordinate distance ||c_i - c_j|| exceeds ``threshold``,
    the hinge max(0, margin - d_ij), with d_ij = sqrt(mean over C * A of (a_i - a_j)^2 + eps) the RMS distance of
    the two chunks; the loss is the mean over those pairs (0 when there is none).

    actions (B, C, A) predicted, normalized; coordinates (B, E) raw (the threshold is in their units) -> scalar.
    """
    if actions.ndim != 3 or coordinates.ndim != 2 or coordinates.shape[0] != actions.shape[0]:
        raise ValueError(
            f"contrastive_coordinate_loss: expected actions (B, C, A) and coordinates (B, E), got "
            f"{tuple(actions.shape)} and {tuple(coordinates.shape)}"
        )
    batch = actions.shape[0]
    distance = _pairwise_rms(actions.float().reshape(batch, -1), eps)  # (B, B)
    coordinate_distance = torch.cdist(coordinates.float(), coordinates.float())  # (B, B)
    upper = torch.ones(batch, batch, dtype=torch.bool, device=actions.device).triu(1)  # i < j
    differ = (coordinate_distance > threshold) & upper
    hinge = torch.relu(margin - distance) * differ
    return hinge.sum() / differ.sum().clamp_min(1)


def relative_contrastive_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    is_pad: torch.Tensor,
    coordinates: torch.Tensor,
    threshold: float,
) -> torch.Tensor:
    """Predicted chunks must be as far apart as the demonstrated ones, for pairs whose coordinates differ.

    For every unordered pair (i, j) with ||c_i - c_j|| > ``threshold``: |d(p_i, p_j) - d(a_i, a_j)|, d the RMS
    distance over the C * A entries of real (not padded) steps (padded steps count as 0 in both); the loss is
    the mean over those pairs (0 when there is none). It is 0 for predictions equal to the demonstrations and
    d(a_i, a_j) for predictions collapsed to one chunk (the midpoint), so unlike a constant-margin hinge it
    tells right from wrong, and it never pushes predictions away from data that do not depend on the target.

    predicted, target (B, C, A) normalized; is_pad (B, C); coordinates (B, E) raw -> scalar.
    """
    if predicted.shape != target.shape or predicted.ndim != 3 or coordinates.shape[0] != predicted.shape[0]:
        raise ValueError(
            f"relative_contrastive_loss: expected predicted and target (B, C, A) and coordinates (B, E), got "
            f"{tuple(predicted.shape)}, {tuple(target.shape)}, {tuple(coordinates.shape)}"
        )
    keep = (~is_pad).unsqueeze(-1).float()  # (B, C, 1)
    batch = predicted.shape[0]
    d_pred = _pairwise_rms((predicted.float() * keep).reshape(batch, -1))  # (B, B)
    d_true = _pairwise_rms((target.float() * keep).reshape(batch, -1))  # (B, B)
    coordinate_distance = torch.cdist(coordinates.float(), coordinates.float())  # (B, B)
    upper = torch.ones(batch, batch, dtype=torch.bool, device=predicted.device).triu(1)  # i < j
    differ = (coordinate_distance > threshold) & upper
    return ((d_pred - d_true).abs() * differ).sum() / differ.sum().clamp_min(1)


def coordinate_aux_loss(predicted: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
    """MSE of the auxiliary head's coordinates: predicted, coordinates (B, E) normalized -> scalar."""
    return (predicted.float() - coordinates.float()).pow(2).mean()
