"""Recipe-to-image generation: a conditioning-augmentation generator and image discriminators.

The generator turns a joint embedding (normally the L2-normalised recipe embedding ``r``) into
a photo, as ACME (Wang et al., CVPR 2019, github.com/hwang1996/ACME ``models.py``), R2GAN (Zhu et
al., CVPR 2019) and TNLBT (Yang et al., MMM 2023) do; the architecture is StackGAN++'s first stage
(Zhang et al., TPAMI 2018), which ACME's generator is derived from.

**Conditioning augmentation** (StackGAN, Zhang et al., ICCV 2017). A linear layer and a GLU map
``r`` to a mean ``mu`` and a log-variance ``log sigma^2`` (``cond_dim`` each); the code is
``c = mu + sigma * eps``, ``eps ~ N(0, I)`` (``c = mu`` in eval mode), and the generator's loss
adds ``KL(N(mu, sigma^2) || N(0, I)) = mean(-1/2 (1 + log sigma^2 - mu^2 - sigma^2))`` (mean over
the elements, as ACME). ACME: ``cond_dim`` 128.

**Generator.** ``[c, z]`` with noise ``z ~ N(0, I)`` (``noise_dim``; ACME 100) -> linear +
BatchNorm + GLU -> ``16 * channels`` maps of 4 x 4 -> up-blocks (nearest x2, 3 x 3 conv,
BatchNorm, GLU; channels halve each time) -> 64 x 64 with ``channels`` maps (4 blocks), or
128 x 128 with ``channels / 2`` (5 blocks) -> 3 x 3 conv -> tanh: an RGB image in [-1, 1].
ACME: ``channels`` 64 (its first stage ends at 64 x 64 x 64) and a second StackGAN++ stage to
128 x 128; recipekit's 128 px option adds a fifth up-block instead of that stage (simpler, and
the same output size).

**Image discriminator** (StackGAN++'s, ACME's ``D_NET128`` shape): stride-2 4 x 4 convolutions
(``channels`` -> ``8 * channels``, LeakyReLU 0.2, BatchNorm after the first) down to 4 x 4, one
more stride-2 block for 128 px input; then a *conditional* logit (the 4 x 4 map concatenated
with the condition tiled 4 x 4, 3 x 3 conv, 4 x 4 conv -> 1) and an *unconditional* logit
(4 x 4 conv -> 1). Logits, not probabilities: the losses use ``binary_cross_entropy_with_logits``
(the same value as ACME's sigmoid + BCE, stable in fp16). :meth:`ImageDiscriminator.features`
is the 4 x 4 map flattened (R2GAN's ``Phi``, the features before the last layer).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ConditioningAugmentation", "RecipeImageGenerator", "ImageDiscriminator", "kl_standard_normal",
           "to_tower_input", "from_tower_input", "GENERATOR_KEYS"]

GENERATOR_KEYS = {"image_size", "cond_dim", "noise_dim", "channels"}


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))``, averaged over the elements (ACME / StackGAN)."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()


class ConditioningAugmentation(nn.Module):
    """``embedding [B, E]`` -> ``(c, mu, logvar)``, each ``[B, cond_dim]`` (module doc)."""

    def __init__(self, in_dim: int, cond_dim: int = 128):
        super().__init__()
        self.cond_dim = cond_dim
        self.fc = nn.Linear(in_dim, cond_dim * 4)

    def forward(self, emb: torch.Tensor, generator: torch.Generator | None = None):
        x = F.glu(self.fc(emb), dim=1)
        mu, logvar = x[:, : self.cond_dim], x[:, self.cond_dim :]
        if not self.training:
            return mu, mu, logvar
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + eps * torch.exp(0.5 * logvar), mu, logvar


def _up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout * 2, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(cout * 2), nn.GLU(dim=1))


class RecipeImageGenerator(nn.Module):
    """Conditioning augmentation + noise -> image in [-1, 1] (module doc).

    ``forward(emb, noise=None, generator=None)`` returns ``(images [B, 3, S, S], mu, logvar)``;
    ``noise`` defaults to a fresh ``N(0, I)`` draw (from ``generator`` when given)."""

    def __init__(self, embed_dim: int, image_size: int = 64, cond_dim: int = 128, noise_dim: int = 100,
                 channels: int = 64):
        super().__init__()
        if image_size not in (64, 128):
            raise ValueError(f"generator image_size must be 64 or 128, got {image_size}")
        if channels < 2 or channels % 2:
            raise ValueError(f"generator channels must be an even number >= 2, got {channels}")
        self.image_size, self.cond_dim, self.noise_dim, self.channels = image_size, cond_dim, noise_dim, channels
        self.ca = ConditioningAugmentation(embed_dim, cond_dim)
        top = channels * 16
        self.fc = nn.Sequential(nn.Linear(cond_dim + noise_dim, top * 4 * 4 * 2, bias=False),
                                nn.BatchNorm1d(top * 4 * 4 * 2), nn.GLU(dim=1))
        blocks, c = [], top
        for _ in range(4 if image_size == 64 else 5):
            blocks.append(_up_block(c, max(c // 2, 1)))
            c = max(c // 2, 1)
        self.up = nn.Sequential(*blocks)
        self.to_rgb = nn.Sequential(nn.Conv2d(c, 3, 3, 1, 1), nn.Tanh())
        self.top = top

    def forward(self, emb: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        c, mu, logvar = self.ca(emb, generator)
        if noise is None:
            noise = torch.randn(emb.shape[0], self.noise_dim, generator=generator, device=emb.device, dtype=c.dtype)
        x = self.fc(torch.cat([c, noise.to(c.dtype)], dim=1)).view(-1, self.top, 4, 4)
        return self.to_rgb(self.up(x)), mu, logvar


class ImageDiscriminator(nn.Module):
    """``forward(images, cond=None)`` -> ``(conditional logit [B] or None, unconditional logit [B])``
    (module doc). ``cond_dim`` 0: an unconditional discriminator (R2GAN's source discriminator)."""

    def __init__(self, image_size: int = 64, cond_dim: int = 128, channels: int = 64):
        super().__init__()
        if image_size not in (64, 128):
            raise ValueError(f"discriminator image_size must be 64 or 128, got {image_size}")
        c = channels
        layers = [nn.Conv2d(3, c, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(3 if image_size == 64 else 4):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, inplace=True)]
            c *= 2
        if image_size == 128:  # back to 8 x channels maps, as the 64 px path
            layers += [nn.Conv2d(c, c // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(c // 2), nn.LeakyReLU(0.2, inplace=True)]
            c //= 2
        self.encode = nn.Sequential(*layers)
        self.feature_dim = c * 16
        self.cond_dim = cond_dim
        self.uncond = nn.Conv2d(c, 1, 4, 4)
        self.cond = None
        if cond_dim > 0:
            self.cond = nn.Sequential(nn.Conv2d(c + cond_dim, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                                      nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(c, 1, 4, 4))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The 4 x 4 feature map, flattened ``[B, feature_dim]`` (R2GAN's ``Phi``)."""
        return self.encode(images).flatten(1)

    def forward(self, images: torch.Tensor, cond: torch.Tensor | None = None):
        h = self.encode(images)
        uncond = self.uncond(h).flatten()
        if cond is None or self.cond is None:
            return None, uncond
        tiled = cond.to(h.dtype)[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return self.cond(torch.cat([h, tiled], dim=1)).flatten(), uncond


def to_tower_input(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """Generated images in [-1, 1] -> the image tower's input (``size`` px, normalised by its
    ``mean`` / ``std``), differentiably (bilinear resize)."""
    x = (images + 1) / 2
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype)[None, :, None, None]
    s = torch.tensor(std, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x - m) / s


def from_tower_input(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """The image tower's normalised input -> images in [-1, 1] at ``size`` px (the GAN's "real"
    photos; antialiased downscaling)."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype)[None, :, None, None]
    s = torch.tensor(std, device=images.device, dtype=images.dtype)[None, :, None, None]
    x = images.float() * s.float() + m.float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x.clamp(0, 1) * 2 - 1).contiguous()
