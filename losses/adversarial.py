"""Adversarial and translation losses of ACME, R2GAN and TNLBT (the GAN family).

Notation: ``v`` image embeddings, ``r`` recipe embeddings (L2-normalised, ``[B, D]``), ``D``
a discriminator, ``G`` the recipe-to-image generator (:mod:`recipekit.embedders.generator`).

**Modality alignment, WGAN-GP** (ACME, Wang et al., CVPR 2019, ``train.py``; Gulrajani et al.,
NeurIPS 2017). A critic :class:`ModalityCritic` on the joint embeddings; image embeddings are
its "real" side, recipe embeddings its "fake" side:

    L_critic = mean D(r) - mean D(v) + lambda_gp * GP,
    GP = mean_i (||grad_x D(x_i)||_2 - 1)^2,  x_i = e_i v_i + (1 - e_i) r_i,  e_i ~ U(0, 1)

(inputs detached; ACME lambda_gp = 10). The encoders minimise ``L_align = -mean D(r)`` (only the
recipe side is pushed, as ACME), weighted 0.005 in ACME's joint loss.

**Image GAN** (StackGAN++ / ACME). With logits ``(c, u) = D(x | mu)`` (conditional,
unconditional), ``BCE(z, t) = binary_cross_entropy_with_logits``:

    L_D = BCE(c_real, 1) + BCE(c_fake, 0) + BCE(u_real, 1) + BCE(u_fake, 0)   (fake, mu detached)
    L_G = BCE(c_fake, 1) + BCE(u_fake, 1) + kl_weight * KL(N(mu, sigma^2) || N(0, I))

ACME uses the conditional terms only; the unconditional pair is StackGAN++'s, which ACME's
generator comes from (it keeps the discriminator informative about image quality alone).

**Translation consistency** (ACME's cross-modal translation). Recipe -> image: the generated
image, re-embedded by the image tower, is classified into the food classes (cross-entropy,
background class 0 ignored as ACME's zero class weight). Image -> recipe: the image embedding
predicts the recipe's ingredients as a multi-label vector over the ingredient vocabulary,
:func:`ingredient_bce` (binary cross-entropy on each entry; ACME's code meant this with
``MultiLabelMarginLoss`` but passed multi-hot vectors where that loss wants index lists, so its
targets were the indices {0, 1} rather than the ingredients). :func:`balance` rescales the larger
of the two translation losses to the smaller one's value (ACME).

**R2GAN** (Zhu et al., CVPR 2019; no public code: terms from its abstract and third-party notes,
docs/models.md). Two-level ranking: the embedding-level triplet (the run's retrieval loss) plus
:func:`image_level_ranking`, the same hinge in image space between images generated from recipe
embeddings and real photos. :func:`reconstruction_loss` is its L_recon; D1 is the conditional
image discriminator, D2 a source discriminator (was this generated image conditioned on an image
embedding or on a recipe embedding?) whose confusion aligns the two modalities through the images.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ModalityCritic", "gradient_penalty", "critic_loss", "alignment_loss", "discriminator_bce",
           "generator_bce", "ingredient_bce", "class_ce", "balance", "image_level_ranking",
           "reconstruction_loss", "IngredientHead"]


class ModalityCritic(nn.Module):
    """WGAN critic on joint embeddings: MLP ``dim -> 512 -> 256 -> 1`` with LeakyReLU(0.2), no
    output non-linearity (ACME's ``cross_modal_discriminator``)."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (512, 256)):
        super().__init__()
        layers, d = [], dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LeakyReLU(0.2, inplace=True)]
            d = h
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class IngredientHead(nn.Module):
    """Image embedding -> ingredient logits: MLP ``dim -> 512 -> 256 -> n`` (ACME's
    image-to-recipe head; logits, not sigmoid scores: :func:`ingredient_bce` applies it)."""

    def __init__(self, dim: int, n_ingredients: int, hidden: tuple[int, ...] = (512, 256)):
        super().__init__()
        layers, d = [], dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        layers.append(nn.Linear(d, n_ingredients))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _full(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors (AMP), else as given (float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, *,
                     generator: torch.Generator | None = None, create_graph: bool = True) -> torch.Tensor:
    """WGAN-GP: ``mean_i (||grad D(x_i)||_2 - 1)^2`` at random interpolates of the (detached)
    ``real`` and ``fake`` rows (module doc). ``create_graph``: keep the graph so the penalty
    trains the critic."""
    real, fake = _full(real.detach()), _full(fake.detach())
    e = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator, device=real.device).to(real.dtype)
    x = (e * real + (1 - e) * fake).requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):
        out = critic(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=create_graph)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def critic_loss(critic: nn.Module, image_emb: torch.Tensor, recipe_emb: torch.Tensor, gp_weight: float = 10.0):
    """``(L_critic, GP)`` for one critic step (module doc; inputs detached here)."""
    v, r = image_emb.detach().float(), recipe_emb.detach().float()
    gp = gradient_penalty(critic, v, r)
    loss = critic(r).mean() - critic(v).mean() + gp_weight * gp
    return loss, gp.detach()


def alignment_loss(critic: nn.Module, recipe_emb: torch.Tensor) -> torch.Tensor:
    """The encoders' side of the modality alignment: ``-mean D(r)``."""
    return -critic(recipe_emb.float()).mean()


def discriminator_bce(real_logits, fake_logits) -> torch.Tensor:
    """Sum over the given (conditional, unconditional) logit pairs of BCE(real, 1) + BCE(fake, 0);
    ``None`` entries are skipped."""
    total = 0.0
    for real, fake in zip(real_logits, fake_logits):
        if real is None:
            continue
        total = total + F.binary_cross_entropy_with_logits(real.float(), torch.ones_like(real, dtype=torch.float32))
        total = total + F.binary_cross_entropy_with_logits(fake.float(), torch.zeros_like(fake, dtype=torch.float32))
    return total


def generator_bce(fake_logits) -> torch.Tensor:
    """Sum over the given logits of BCE(fake, 1) (the non-saturating generator loss)."""
    total = 0.0
    for fake in fake_logits:
        if fake is not None:
            total = total + F.binary_cross_entropy_with_logits(fake.float(), torch.ones_like(fake, dtype=torch.float32))
    return total


def ingredient_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label binary cross-entropy, averaged over the batch and the vocabulary; ``targets``
    multi-hot ``[B, V]`` (1 = the recipe lists that ingredient)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def class_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the food classes, background (class 0) ignored; 0 when the batch has
    no labelled pair (ACME: class weight 0 for the background)."""
    keep = labels > 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep].float(), labels[keep])


def balance(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ACME's balancing: the larger of two losses is multiplied by (smaller / larger), detached,
    so both enter the joint loss with the smaller one's value (their gradients keep their
    directions)."""
    av, bv = float(a.detach()), float(b.detach())
    if av > bv > 0:
        return a * (bv / av), b
    if bv > av > 0:
        return a, b * (av / bv)
    return a, b


def _pixel_distances(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel distance of every generated image to every real one: ``[B, B]``."""
    g, r = generated.float().flatten(1), real.float().flatten(1)
    d = (g * g).sum(1, keepdim=True) - 2 * g @ r.t() + (r * r).sum(1)[None, :]
    return d.clamp_min(0) / g.shape[1]


def image_level_ranking(generated: torch.Tensor, real: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """R2GAN's image-level ranking: an image generated from recipe ``i`` must be closer (mean
    squared pixel distance) to photo ``i`` than to any other photo ``j`` of the batch by
    ``margin``: ``mean_{i != j} max(0, margin + d(g_i, x_i) - d(g_i, x_j))`` (all negatives,
    averaged, as H-T's embedding-level triplet)."""
    d = _pixel_distances(generated, real)
    pos = d.diagonal()[:, None]
    hinge = (margin + pos - d).clamp_min(0)
    off = ~torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    return hinge[off].mean() if off.any() else d.sum() * 0.0


def reconstruction_loss(phi_real, phi_from_image, phi_from_recipe, real, from_image, from_recipe,
                        beta: float = 1.0) -> torch.Tensor:
    """R2GAN's L_recon = 1/2 [||Phi(x) - Phi(v_I)||^2 + ||Phi(v_I) - Phi(v_R)||^2
    + beta (||x - v_I||^2 + ||v_I - v_R||^2)], squared distances averaged over elements; ``x`` the
    photo, ``v_I`` / ``v_R`` the images generated from its image / recipe embedding, ``Phi`` the
    image discriminator's features."""
    f = F.mse_loss
    feat = f(phi_from_image.float(), phi_real.float().detach()) + f(phi_from_recipe.float(), phi_from_image.float())
    pix = f(from_image.float(), real.float().detach()) + f(from_recipe.float(), from_image.float())
    return 0.5 * (feat + beta * pix)
