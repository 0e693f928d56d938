"""The adversarial training step of ``[gan]`` runs (ACME, R2GAN, TNLBT): :class:`Adversary`.

A paired batch trains in two alternating updates (ACME's loop, ``train.py``, with the order
joint-then-discriminators so one forward pass serves both):

1. **Joint step** (the trainer's usual step): the embedders (image and recipe towers, the loss
   modules, the translation heads of :class:`AdversarialHeads`) and the generator minimise

   - ``acme`` / ``tnlbt``: ``L_pair [+ recipe_weight L_recipe] + modality_weight L_align +
     translation_weight (L_img + L_text)`` with ``L_align = -mean D_mod(r)``,
     ``L_img = L_G + CE_class(E_img(G(r))) + kl_weight KL``, ``L_text = BCE_ingr(v) + CE_class(v)``
     (balanced by ACME's rescaling when ``balance``);
   - ``r2gan``: ``L_pair + image_rank_weight L_rank_img + recon_weight L_recon + semantic_weight
     (CE_class(v) + CE_class(r)) + translation_weight (L_G + kl_weight KL + source_weight L_src)``,
     where the generator makes an image from each embedding (``v_I = G(v)``, ``v_R = G(r)``), and
     ``L_src`` asks the source discriminator to take ``v_R`` for an image-conditioned one.

   Formulas and sources: :mod:`recipekit.losses.adversarial`. Two optimisers step on this
   backward: the trainer's (embedders) and the generator's (Adam, ``gan.generator_lr``); under
   fp16 they share the GradScaler of that backward (PyTorch's pattern for several optimisers on
   one loss).
2. **Discriminator step** on the batch's detached embeddings and images: ``gan.n_critic``
   updates of the modality critic (WGAN-GP; ``acme``/``tnlbt``), then one update of the image
   discriminator D1 (real photo vs generated, conditioned on ``mu``) and, for ``r2gan``, of the
   source discriminator D2. One Adam (``gan.discriminator_lr``) with its own schedule and its own
   GradScaler (fp16), gradients averaged over the ranks under DDP.

Each optimiser has its own LR schedule (the ``[optim]`` schedule shape at its own base rate);
all of it is in ``last.pt`` (:meth:`Adversary.state_dict`) so ``--resume`` stays bit-exact.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from recipekit.embedders.generator import ImageDiscriminator, from_tower_input, kl_standard_normal
from recipekit.losses import adversarial as L

from .config import ConfigError, TrainConfig
from .distributed import DistInfo

__all__ = ["AdversarialHeads", "Discriminators", "IngredientTargets", "Adversary", "joint_terms", "ADV_KEYS"]

# per-term losses logged as loss_<key> in metrics.jsonl and train/<key> in TensorBoard
ADV_KEYS = ("gan_total", "gan_align", "gan_img", "gan_text", "gan_g", "gan_kl", "gan_class_fake", "gan_ingredients",
            "gan_class_real", "gan_rank_img", "gan_recon", "gan_semantic", "gan_source", "gan_critic", "gan_gp",
            "gan_wasserstein", "gan_d_image", "gan_d_source")


class AdversarialHeads(nn.Module):
    """Translation heads trained with the embedders: image embedding -> ingredients (multi-label
    over the ingredient vocabulary) and embedding -> food class."""

    def __init__(self, dim: int, n_ingredients: int, n_classes: int):
        super().__init__()
        self.ingredients = L.IngredientHead(dim, n_ingredients)
        self.classes = nn.Linear(dim, n_classes)


class Discriminators(nn.Module):
    """The modality critic (``acme``/``tnlbt``), the conditional image discriminator D1, and the
    source discriminator D2 (``r2gan``)."""

    def __init__(self, method: str, embed_dim: int, image_size: int, cond_dim: int, channels: int):
        super().__init__()
        self.critic = L.ModalityCritic(embed_dim) if method in ("acme", "tnlbt") else None
        self.image = ImageDiscriminator(image_size, cond_dim, channels)
        self.source = ImageDiscriminator(image_size, 0, channels) if method == "r2gan" else None


class IngredientTargets:
    """Recipe id -> multi-hot ingredient vector over the ``size`` most frequent train ingredients
    of ``PREPARED/ingredient_vocab.parquet`` (names from ``ingredients.parquet``)."""

    def __init__(self, prepared: Path, size: int):
        import pyarrow.parquet as pq

        vocab = pq.read_table(prepared / "ingredient_vocab.parquet", columns=["name", "train_count"]).to_pylist()
        vocab = sorted((r for r in vocab if r["train_count"] > 0), key=lambda r: (-r["train_count"], r["name"]))
        self.names = [r["name"] for r in vocab[:size]]
        index = {n: i for i, n in enumerate(self.names)}
        table = pq.read_table(prepared / "ingredients.parquet", columns=["id", "partition", "ingredients"])
        self.rows: dict[str, np.ndarray] = {}
        for rid, part, names in zip(*(table.column(c).to_pylist() for c in ("id", "partition", "ingredients"))):
            if part == "train":
                self.rows[rid] = np.array(sorted({index[n] for n in names or () if n in index}), dtype=np.int64)
        if not self.names:
            raise ConfigError(f"{prepared}/ingredient_vocab.parquet: no train ingredient to predict")

    def __len__(self) -> int:
        return len(self.names)

    def multi_hot(self, ids, device) -> torch.Tensor:
        out = torch.zeros(len(ids), len(self.names))
        for i, rid in enumerate(ids):
            idx = self.rows.get(rid)
            if idx is not None and len(idx):
                out[i, torch.from_numpy(idx)] = 1.0
        return out.to(device, non_blocking=True)


def _real(model, images: torch.Tensor, size: int) -> torch.Tensor:
    tower = model.image_tower
    return from_tower_input(images, size, tower.mean, tower.std)


def joint_terms(cfg: TrainConfig, model, heads: AdversarialHeads, discs: Discriminators, out, images, labels,
                ingredients) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The joint step's adversarial terms on a paired batch: (weighted total, per-term values
    for the logs, detached tensors for the discriminator step). Module doc for the formulas."""
    g, G = cfg.gan, model.generator
    v, r = out.image.float(), out.recipe.float()
    real = _real(model, images, G.image_size)
    logs: dict[str, torch.Tensor] = {}
    if g.method in ("acme", "tnlbt"):
        align = L.alignment_loss(discs.critic, r)
        fake, mu, logvar = G(r)
        c_fake, u_fake = discs.image(fake, mu)
        g_adv = L.generator_bce([c_fake, u_fake])
        kl = kl_standard_normal(mu.float(), logvar.float())
        class_fake = L.class_ce(heads.classes(model.embed_generated(fake).float()), labels)
        img = g_adv + class_fake + g.kl_weight * kl
        ingr = L.ingredient_bce(heads.ingredients(v), ingredients)
        class_real = L.class_ce(heads.classes(v), labels)
        text = ingr + class_real
        logs.update(gan_align=align, gan_img=img, gan_text=text, gan_g=g_adv, gan_kl=kl, gan_class_fake=class_fake,
                    gan_ingredients=ingr, gan_class_real=class_real)
        if g.balance:
            img, text = L.balance(img, text)
        total = g.modality_weight * align + g.translation_weight * (img + text)
        stash = {"image": v.detach(), "recipe": r.detach(), "real": real, "fake": fake.detach(),
                 "mu": mu.detach()}
    else:  # r2gan
        fake_r, mu_r, lv_r = G(r)
        fake_v, mu_v, lv_v = G(v)
        c_r, u_r = discs.image(fake_r, mu_r)
        c_v, u_v = discs.image(fake_v, mu_v)
        g_adv = L.generator_bce([c_r, u_r, c_v, u_v])
        kl = kl_standard_normal(mu_r.float(), lv_r.float()) + kl_standard_normal(mu_v.float(), lv_v.float())
        _, s_r = discs.source(fake_r)
        source = L.generator_bce([s_r])
        rank_img = L.image_level_ranking(fake_r, real, g.image_rank_margin)
        feats = discs.image.features
        recon = L.reconstruction_loss(feats(real), feats(fake_v), feats(fake_r), real, fake_v, fake_r,
                                      g.recon_pixel_weight)
        semantic = L.class_ce(heads.classes(v), labels) + L.class_ce(heads.classes(r), labels)
        logs.update(gan_g=g_adv, gan_kl=kl, gan_source=source, gan_rank_img=rank_img, gan_recon=recon,
                    gan_semantic=semantic)
        total = (g.image_rank_weight * rank_img + g.recon_weight * recon + g.semantic_weight * semantic
                 + g.translation_weight * (g_adv + g.kl_weight * kl + g.source_weight * source))
        stash = {"real": real, "fake": fake_r.detach(), "mu": mu_r.detach(), "fake_v": fake_v.detach(),
                 "mu_v": mu_v.detach()}
    logs["gan_total"] = total
    return total, {k: x.detach().float() for k, x in logs.items()}, stash


class Adversary:
    """What a ``[gan]`` run adds to the trainer: the translation heads (trained with the
    embedders), the discriminators with their optimiser, schedule and scaler, the generator's
    optimiser and schedule, the ingredient targets, and the per-epoch image grid."""

    def __init__(self, cfg: TrainConfig, model, info: DistInfo, amp, steps_per_epoch: int):
        from .build import LRFactor
        from .data import num_classes

        g, o = cfg.gan, cfg.optim
        if model.generator is None:
            raise ConfigError(f"gan.method = {g.method!r}: the model has no generator (model.overrides.generator)")
        self.cfg, self.info, self.amp, self.model = cfg, info, amp, model
        prepared = Path(cfg.data.prepared)
        self.targets = IngredientTargets(prepared, g.ingredient_vocab)
        G = model.generator
        dev = info.device
        # the same initial weights on every rank (the discriminators are outside DDP, which would
        # otherwise broadcast rank 0's), without touching the per-rank random streams
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed + 1)
            self.heads = AdversarialHeads(model.embed_dim, len(self.targets), num_classes(prepared)).to(dev)
            self.discs = Discriminators(g.method, model.embed_dim, G.image_size, G.cond_dim, g.disc_channels).to(dev)
        betas = (g.beta1, g.beta2)
        self.g_opt = torch.optim.Adam(G.parameters(), lr=g.generator_lr, betas=betas)
        self.d_opt = torch.optim.Adam(self.discs.parameters(), lr=g.discriminator_lr, betas=betas)

        def schedule(opt):
            return torch.optim.lr_scheduler.LambdaLR(opt, LRFactor(o.schedule, steps_per_epoch, cfg.train.epochs,
                                                                   o.step_size, o.gamma, o.warmup_epochs,
                                                                   o.min_lr_ratio))

        self.g_sched, self.d_sched = schedule(self.g_opt), schedule(self.d_opt)
        self.d_scaler = torch.amp.GradScaler("cuda") if amp.scaler else None
        self.grid: dict[str, Any] | None = None

    def generator_parameters(self):
        return list(self.model.generator.parameters())

    # -- the joint step's second optimiser -------------------------------------------------------
    def step_generator(self, scaler) -> None:
        """Step the generator's Adam on the joint backward's gradients; nothing after a
        recipe-only batch (no gradient reached it; GradScaler.step would refuse an optimiser
        without any)."""
        if not any(p.grad is not None for p in self.model.generator.parameters()):
            return
        if scaler is not None:
            scaler.step(self.g_opt)
        else:
            self.g_opt.step()

    def after_step(self) -> None:
        self.g_sched.step()
        self.g_opt.zero_grad(set_to_none=True)

    # -- the discriminator step ------------------------------------------------------------------
    def _autocast(self):
        if not self.amp.enabled:
            return nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp.dtype)

    def _update(self, loss: torch.Tensor, params) -> None:
        scaler = self.d_scaler
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if self.info.distributed:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(self.info.world_size)
        if scaler is not None:
            scaler.step(self.d_opt)
            scaler.update()
        else:
            self.d_opt.step()
        self.d_opt.zero_grad(set_to_none=True)

    def discriminator_step(self, stash: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``n_critic`` critic updates then one image-discriminator update on one batch's
        detached tensors; returns the per-term values (detached) for the logs."""
        g, d = self.cfg.gan, self.discs
        logs: dict[str, torch.Tensor] = {}
        self.d_opt.zero_grad(set_to_none=True)  # the joint step left gradients in the discriminators
        if d.critic is not None:
            params = list(d.critic.parameters())
            for _ in range(g.n_critic):
                loss, gp = L.critic_loss(d.critic, stash["image"], stash["recipe"], g.gp_weight)
                self._update(loss, params)
            logs["gan_critic"], logs["gan_gp"] = loss.detach(), gp
            logs["gan_wasserstein"] = (loss.detach() - g.gp_weight * gp).neg()
        params = list(d.image.parameters()) + (list(d.source.parameters()) if d.source is not None else [])
        with self._autocast():
            reals, fakes = [], []
            c_real, u_real = d.image(stash["real"], stash["mu"])
            c_fake, u_fake = d.image(stash["fake"], stash["mu"])
            reals += [c_real, u_real]
            fakes += [c_fake, u_fake]
            if "fake_v" in stash:  # r2gan: images from both embeddings are fakes to D1
                c_fv, u_fv = d.image(stash["fake_v"], stash["mu_v"])
                c_r2, u_r2 = d.image(stash["real"], stash["mu_v"])
                reals += [c_r2, u_r2]
                fakes += [c_fv, u_fv]
        d_image = L.discriminator_bce(reals, fakes)
        loss = d_image
        logs["gan_d_image"] = d_image.detach()
        if d.source is not None:
            with self._autocast():
                _, from_image = d.source(stash["fake_v"])
                _, from_recipe = d.source(stash["fake"])
            d_source = L.discriminator_bce([from_image], [from_recipe])
            loss = loss + g.source_weight * d_source
            logs["gan_d_source"] = d_source.detach()
        self._update(loss, params)
        self.d_sched.step()
        return {k: x.float() for k, x in logs.items()}

    # -- checkpoint ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"discriminators": self.discs.state_dict(), "d_opt": self.d_opt.state_dict(),
                "d_sched": self.d_sched.state_dict(), "g_opt": self.g_opt.state_dict(),
                "g_sched": self.g_sched.state_dict(),
                "d_scaler": self.d_scaler.state_dict() if self.d_scaler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discs.load_state_dict(state["discriminators"])
        self.d_opt.load_state_dict(state["d_opt"])
        self.d_sched.load_state_dict(state["d_sched"])
        self.g_opt.load_state_dict(state["g_opt"])
        self.g_sched.load_state_dict(state["g_sched"])
        if self.d_scaler is not None and state.get("d_scaler"):
            self.d_scaler.load_state_dict(state["d_scaler"])

    # -- the image grid --------------------------------------------------------------------------
    def remember(self, inputs: dict) -> None:
        """Keep the first ``grid_size`` pairs of the first batch seen (rank 0) for the grids."""
        if self.grid is None:
            n = self.cfg.gan.grid_size
            self.grid = {"recipes": {k: v[:n].detach().clone() for k, v in inputs["recipes"].items()},
                         "real": _real(self.model, inputs["images"][:n].detach(), self.model.generator.image_size)}

    @torch.no_grad()
    def write_grid(self, path: Path) -> Path | None:
        """Real photos (top row) and the photos generated from their recipes (bottom row, fixed
        noise, eval mode) as one PNG; nothing when no batch was remembered."""
        if self.grid is None:
            return None
        from torchvision.utils import save_image

        from recipekit.core.io import atomic_path

        model = self.model
        was = model.training
        model.eval()
        try:
            emb = model(recipes=self.grid["recipes"]).recipe.float()
            gen = torch.Generator(device=emb.device).manual_seed(0)
            noise = torch.randn(emb.shape[0], model.generator.noise_dim, generator=gen, device=emb.device)
            fake = model.generator(emb, noise)[0].float()
        finally:
            model.train(was)
        grid = torch.cat([self.grid["real"].float(), fake]).add(1).div(2).clamp(0, 1).cpu()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_image(grid, tmp, nrow=emb.shape[0], padding=2, format="png")
        return path
