"""Random affine distortions of character images (training tasks only): a small rotation,
shear, scale per axis and translation per image, drawn from the sampler's generator.

Rotation, shear and scale take the ranges Koch et al. (2015) used for their Siamese
networks on Omniglot; the shift is up to 5% of the image's width.
"""
import math

import torch
import torch.nn.functional as F

MAX_ROTATION = math.radians(10)
MAX_SHEAR = 0.3
SCALE_RANGE = (0.8, 1.2)
MAX_SHIFT = 0.1  # of the image's half-width


def _uniform(low, high, count, generator):
    return low + (high - low) * torch.rand(count, generator=generator)


def affine_matrices(count, generator):
    """(count, 2, 3) random affine maps in affine_grid's normalised coordinates."""
    angle = _uniform(-MAX_ROTATION, MAX_ROTATION, count, generator)
    shear = _uniform(-MAX_SHEAR, MAX_SHEAR, count, generator)
    scale = _uniform(*SCALE_RANGE, 2 * count, generator).view(count, 2)
    shift = _uniform(-MAX_SHIFT, MAX_SHIFT, 2 * count, generator).view(count, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (count, 2, 2)
    shearing = torch.eye(2).repeat(count, 1, 1)
    shearing[:, 0, 1] = shear
    linear = rotation @ shearing / scale.unsqueeze(-1)  # output -> input sampling map: shrink = zoom out
    return torch.cat([linear, shift.unsqueeze(-1)], dim=-1)


def random_affine(images, generator):
    """(..., C, H, W) float images -> each distorted by its own random affine map (bilinear, ink 0 outside)."""
    flat = images.reshape(-1, *images.shape[-3:])
    theta = affine_matrices(flat.shape[0], generator).to(flat.device, flat.dtype)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    return F.grid_sample(flat, grid, mode='bilinear', padding_mode='zeros', align_corners=False).view(images.shape)
