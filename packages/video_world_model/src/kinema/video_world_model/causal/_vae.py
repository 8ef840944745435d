"""Block-by-block decoding with AutoencoderKLWan's causal feature cache carried across blocks.

diffusers' ``AutoencoderKLWan._decode`` runs ``post_quant_conv`` and then ``decoder`` one latent frame at a time,
passing a feature cache (the last frames every causal convolution saw) from frame to frame; latent frame 0 is the
first chunk (1 video frame), every later latent frame gives 4. :class:`StreamingVAEDecoder` runs the same loop but
keeps the cache between calls, so decoding blocks one after another gives the frames of one decode of the whole
rollout (1 + 4 (F - 1) frames), and each block's frames as soon as the block exists: 4 * block_size frames per
block, 4 * block_size - 3 for the first. Tiling is not used here (a streamed block is decoded whole).

Two options make the decode faster without changing what it computes (the same convolutions, so the same frames
up to float rounding; tests compare them with diffusers' own decode):

- ``frames_per_call``: latent frames given to the decoder at once (1: diffusers' loop). Every causal convolution
  concatenates its cached frames with whatever it is given, so a block can go through in one call (``None``):
  larger convolutions and a third of the launches. Latent frame 0 still goes alone (it is the first chunk).
- ``channels_last``: the decoder's convolutions in channels-last layout (NDHWC / NHWC), cuDNN's native layout for
  bf16 tensor-core convolutions; the weights are converted in place once.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, unpatchify


class StreamingVAEDecoder:
    """decode(latents (B, z, f, h, w) normalized) -> video (B, 3, T, H, W) in [-1, 1], float32;
    T = 4f - 3 for the first call after :meth:`reset`, 4f after."""

    def __init__(
        self, vae: AutoencoderKLWan, *, frames_per_call: int | None = 1, channels_last: bool = False
    ):
        self.vae = vae
        self.frames_per_call = self.check_frames_per_call(frames_per_call)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            to_channels_last(vae)
        self._num_convs = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        shape = (1, vae.config.z_dim, 1, 1, 1)
        self._mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(shape)
        self._std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(shape)
        self.reset()

    @staticmethod
    def check_frames_per_call(frames_per_call: int | None) -> int | None:
        if frames_per_call is not None and (
            isinstance(frames_per_call, bool) or not isinstance(frames_per_call, int) or frames_per_call < 1
        ):
            raise ValueError(f"frames_per_call: expected an integer >= 1 or None, got {frames_per_call!r}")
        return frames_per_call

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
        if self.channels_last:
            raw = raw.contiguous(memory_format=torch.channels_last_3d)
        x = vae.post_quant_conv(raw)  # 1x1x1 causal conv: no temporal state
        chunks = []
        start = 0
        while start < x.shape[2]:
            # the first chunk alone; then frames_per_call latent frames (None: all the rest) per call
            step = 1 if self._first else self.frames_per_call or x.shape[2]
            stop = min(start + step, x.shape[2])
            chunks.append(
                vae.decoder(
                    x[:, :, start:stop], feat_cache=self._feat_map, feat_idx=[0], first_chunk=self._first
                )
            )
            self._first = False
            start = stop
        out = torch.cat(chunks, dim=2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        return out.float().clamp(-1, 1)


def to_channels_last(vae: AutoencoderKLWan) -> None:
    """Converts the decoder's (and post_quant_conv's) convolution weights to channels-last, in place."""
    for module in [vae.post_quant_conv, *vae.decoder.modules()]:
        if isinstance(module, torch.nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
        elif isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=torch.channels_last)
