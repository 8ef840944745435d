"""Block-by-block decoding with AutoencoderKLWan's causal feature cache carried across blocks.

diffusers' ``AutoencoderKLWan._decode`` runs ``post_quant_conv`` and then ``decoder`` one latent frame at a time,
passing a feature cache (the last frames every causal convolution saw) from frame to frame; latent frame 0 is the
first chunk (1 video frame), every later latent frame gives 4. :class:`StreamingVAEDecoder` runs the same loop but
keeps the cache between calls, so decoding blocks one after another gives the frames of one decode of the whole
rollout (1 + 4 (F - 1) frames), and each block's frames as soon as the block exists: 4 * block_size frames per
block, 4 * block_size - 3 for the first. Tiling is not used here (a streamed block is decoded whole).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, unpatchify


class StreamingVAEDecoder:
    """decode(latents (B, z, f, h, w) normalized) -> video (B, 3, T, H, W) in [-1, 1], float32;
    T = 4f - 3 for the first call after :meth:`reset`, 4f after."""

    def __init__(self, vae: AutoencoderKLWan):
        self.vae = vae
        self._num_convs = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        shape = (1, vae.config.z_dim, 1, 1, 1)
        self._mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(shape)
        self._std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(shape)
        self.reset()

    def reset(self) -> None:
        """Starts a new video: the next latent frame is the first chunk."""
        self._feat_map: list = [None] * self._num_convs
        self._first = True

    @property
    def frames_decoded(self) -> bool:
        return not self._first

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        mean, std = self._mean.to(latents.device), self._std.to(latents.device)
        raw = (latents.float() * std + mean).to(vae.device, vae.dtype)
        x = vae.post_quant_conv(raw)  # 1x1x1 causal conv: no temporal state
        chunks = []
        for i in range(x.shape[2]):
            chunks.append(
                vae.decoder(
                    x[:, :, i : i + 1], feat_cache=self._feat_map, feat_idx=[0], first_chunk=self._first
                )
            )
            self._first = False
        out = torch.cat(chunks, dim=2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        return out.float().clamp(-1, 1)
