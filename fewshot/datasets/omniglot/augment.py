"""Random distortions of character images (training tasks only), drawn from the sampler's
generator: an affine map (a small rotation, shear, scale per axis and translation per image)
and an elastic one (a smooth random displacement field per image), applied in one resampling.

Rotation, shear and scale take the ranges Koch et al. (2015) used for their Siamese
networks on Omniglot; the shift is up to 5% of the image's width. The elastic field is
Simard et al.'s (2003): uniform noise smoothed by a Gaussian, here of a width and a
displacement that scale with the image: at 28x28 their MNIST Gaussian (4 pixels) and
displacements of 0.84 pixels root mean square (theirs about 1.4: strokes of Omniglot's
characters then bend out of shape).
"""
import functools
import math

import torch
import torch.nn.functional as F

MAX_ROTATION = math.radians(10)
MAX_SHEAR = 0.3
SCALE_RANGE = (0.8, 1.2)
MAX_SHIFT = 0.1  # of the image's half-width
ELASTIC_SMOOTHING = 4 / 28  # the Gaussian's standard deviation, as a fraction of the image's side
ELASTIC_RMS = 0.06  # root mean square displacement per axis, in units of the image's half-width


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


def elastic_fields(count, size, generator):
    """(count, size, size, 2) smooth random displacements in affine_grid's normalised coordinates:
    uniform noise per pixel and axis, smoothed by a Gaussian of ELASTIC_SMOOTHING * size pixels and
    scaled to ELASTIC_RMS root mean square (so the same distortion at every image size)."""
    sigma = ELASTIC_SMOOTHING * size
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets.square() / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    noise = 2 * torch.rand(2 * count, 1, size + 2 * radius, size + 2 * radius, generator=generator) - 1
    smooth = F.conv2d(F.conv2d(noise, kernel.view(1, 1, -1, 1)), kernel.view(1, 1, 1, -1))  # (2 * count, 1, S, S)
    noise_rms = kernel.square().sum() / math.sqrt(3)  # of uniform(-1, 1) noise through the separable Gaussian
    return (ELASTIC_RMS / noise_rms * smooth).view(count, 2, size, size).permute(0, 2, 3, 1)


def random_distortion(images, generator, *, affine, elastic):
    """(..., C, S, S) float images -> each distorted by its own random affine map and/or elastic
    field (bilinear, ink 0 outside); the affine map's numbers are drawn first."""
    flat = images.reshape(-1, *images.shape[-3:])
    count = flat.shape[0]
    theta = affine_matrices(count, generator) if affine else torch.eye(2, 3).expand(count, 2, 3)
    grid = F.affine_grid(theta.to(flat.device, flat.dtype), list(flat.shape), align_corners=False)
    if elastic:
        grid = grid + elastic_fields(count, flat.shape[-1], generator).to(flat.device, flat.dtype)
    return F.grid_sample(flat, grid, mode='bilinear', padding_mode='zeros', align_corners=False).view(images.shape)


random_affine = functools.partial(random_distortion, affine=True, elastic=False)


def distortion(affine, elastic):
    """The training images' transform of the --augment_affine and --augment_elastic flags, or None."""
    return functools.partial(random_distortion, affine=affine, elastic=elastic) if affine or elastic else None
