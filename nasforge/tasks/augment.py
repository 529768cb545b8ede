"""Batch augmentation for small images as plain tensor ops (no torchvision).

A policy is a name, so it can be a candidate of a search-space choice (``hp.augment``) and a
:class:`~nasforge.tasks.training.TrainSettings` option alike:

- ``none``: images as they are.
- ``flip``: mirror each image left-right with probability 1/2.
- ``crop``: pad each side by ``max(1, H // 8)`` pixels (4 for 32x32 inputs, as the usual CIFAR
  recipe does; 1 for 8x8 digits) with zeros, then cut a random window of the original size.
- ``crop_flip``: ``crop`` then ``flip``, the standard CIFAR augmentation.

Randomness comes from torch's generator on the images' device, so a training loop that seeds
it (``train_model`` does) gets the same augmented batches from the same seed.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

__all__ = ["AugmentPolicy", "AUGMENT_POLICIES", "augment_batch", "random_crop", "random_flip"]

#: The named augmentation policies.
AugmentPolicy = Literal["none", "flip", "crop", "crop_flip"]
AUGMENT_POLICIES: tuple[str, ...] = get_args(AugmentPolicy)


def random_flip(images: torch.Tensor) -> torch.Tensor:
    """Each image of an ``N x C x H x W`` batch mirrored left-right with probability 1/2."""
    flip = torch.rand(len(images), device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def random_crop(images: torch.Tensor, padding: int | None = None) -> torch.Tensor:
    """Each image zero-padded by ``padding`` pixels (default ``max(1, H // 8)``), then cropped
    back to ``H x W`` at a random offset of its own."""
    n, _, height, width = images.shape
    pad = max(1, height // 8) if padding is None else padding
    padded = F.pad(images, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (n,), device=images.device)
    left = torch.randint(0, 2 * pad + 1, (n,), device=images.device)
    rows = top[:, None] + torch.arange(height, device=images.device)  # n x H
    cols = left[:, None] + torch.arange(width, device=images.device)  # n x W
    batch = torch.arange(n, device=images.device)[:, None, None]
    cropped = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # n x H x W x C
    return cropped.permute(0, 3, 1, 2).contiguous()


def augment_batch(images: torch.Tensor, policy: str) -> torch.Tensor:
    """``images`` augmented by the named ``policy`` (see the module docstring)."""
    if policy not in AUGMENT_POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; allowed: {', '.join(AUGMENT_POLICIES)}")
    if policy in ("crop", "crop_flip"):
        images = random_crop(images)
    if policy in ("flip", "crop_flip"):
        images = random_flip(images)
    return images
