r"""Gradient cache: the loss of a large batch with the activations of only a few samples at a time.

``train.grad_cache_chunk = N`` (0 = off) makes the trainer compute every batch's loss over the
whole batch -- all in-batch negatives, and under DDP the negatives gathered from every rank,
exactly as without it -- while the towers' activations are held for at most ``N`` samples at
once. The technique is GradCache (Gao, Zhang, Han and Callan, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", RepL4NLP 2021, arXiv:2101.06983; reference
code luyug/GradCache). It rests on the chain rule through the representations: with ``f_θ``
the towers, ``e_i = f_θ(x_i)`` the embeddings of the batch and ``L(e_1, ..., e_B; φ)`` the
loss (``φ``: the loss's own parameters),

.. math::
    \frac{\partial L}{\partial \theta} = \sum_i \Big(\frac{\partial L}{\partial e_i}\Big)^{\top}
    \frac{\partial e_i}{\partial \theta},

and the sum splits over chunks of samples. One step (:meth:`GradCache.step`) is:

1. **Embed without a graph.** For each chunk of ``N`` samples: snapshot the random state (the
   CPU generator, and the CUDA generator of the device), run the towers under ``no_grad`` and
   keep the embeddings (and, with H-T's recipe loss, the per-component recipe vectors).
2. **The loss on cached embeddings.** Concatenate them into float32 leaf tensors, compute the
   full-batch loss exactly as the trainer does (:meth:`TrainStep.objective`: the same DDP
   gather and gradient scaling) and take its gradient with respect to the leaves and to the
   loss's own parameters (``torch.autograd.grad``: nothing is accumulated yet). The logged
   losses are this loss's values.
3. **Replay each chunk with a graph.** Restore the chunk's random state (so dropout draws the
   same masks as in step 1), run its forward pass again with gradients and back-propagate the
   surrogate ``Σ_i <e_i, ∂L/∂e_i>`` (:func:`surrogate`); its gradient with respect to ``θ`` is
   that chunk's share of ``∂L/∂θ``. The last chunk's surrogate also carries ``<φ, ∂L/∂φ>``,
   so the loss's parameters (a classifier head, H-T's projections, InfoNCE's temperature) get
   their gradient through the same backward -- and through DDP's gradient averaging.

The optimiser step, gradient clipping and the GradScaler's unscale/update stay in the trainer.
Composition: gradient accumulation (``train.accumulate``) divides the cached gradients by the
number of micro-batches, as the plain step divides the loss; under fp16 the surrogate is scaled
by the GradScaler (the loss gradient itself is taken in float32, so it cannot underflow; bf16
needs no scaler); under DDP every chunk but the last of the optimiser step's last micro-batch
runs under ``no_sync``, so gradients are averaged once; cached-features mode
(``train.cache_features``) chunks the cached backbone features like images. H-T's recipe-only
batches are supported (their embeddings are the recipe components).

**Exactness.** The result equals the plain batch's up to float rounding when every sample's
embedding depends only on that sample:

* *dropout* -- replaying the random state makes the second pass draw the masks of the first,
  so the cached gradient is the exact gradient of the loss that was logged. The masks are drawn
  per chunk, so they are not the masks a plain batch would have drawn (same distribution, other
  numbers): equal to the plain batch *in distribution*, and exactly equal to a plain batch whose
  forward pass ran chunk by chunk (tests/test_gradcache.py compares exactly that).
* *BatchNorm in training mode* (ResNet and EfficientNet backbones while they are fine-tuned)
  normalises each chunk with that chunk's statistics, not the batch's: the gradient is exact
  for that per-chunk normalisation but differs from the plain batch's. Running statistics are
  updated once per chunk (step 1's updates are undone). A frozen backbone (eval mode), a ViT
  (LayerNorm) and every recipe tower are unaffected. :func:`batchnorm_in_training` finds them.
* *the loss* must be a function of the embeddings (and labels and its own parameters) only:
  T-Food's matching head reads the towers' token features and samples negatives, so
  ``loss.matching_weight > 0`` is refused with ``train.grad_cache_chunk``.

``[gan]`` runs: the joint step's adversarial and translation terms read the photos and the
generator's images, not only the embeddings, so they are not cached. Step 3 computes them on each
chunk's own samples, weighted by ``n_chunk / batch`` (:meth:`TrainStep.forward` with
``cached_grads["gan_weight"]``), and keeps each chunk's detached tensors for the discriminator
step, which then sees the whole batch. Means over samples are thereby the batch's means; ACME's
balance ratio, R2GAN's image-level ranking, the generator's and discriminators' BatchNorm
statistics and the generator's noise are per chunk.

Cost: one extra forward pass of the towers per batch (step 1), plus the cached embeddings.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn as nn
from recipekit.embedders.model import EmbedderOutput

__all__ = ["GradCache", "split_inputs", "representations", "surrogate", "batchnorm_in_training"]


def split_inputs(inputs: dict, chunk: int, extra: tuple[str, ...] = ()) -> list[dict]:
    """The trainer's batch inputs (``recipes`` dict, ``images`` or ``features``; ``labels`` is left
    out: the loss sees the whole batch's) split along dim 0 into the fewest chunks of at most
    ``chunk`` samples, of sizes that differ by at most one (16 samples in chunks of 5: 4, 4, 4, 4,
    not 5, 5, 5, 1: a chunk of one sample would break a BatchNorm in training mode);
    ``extra``: more per-sample keys to split (``labels`` and ``ingredients`` for the ``[gan]`` terms)."""
    recipes = inputs["recipes"]
    n = next(iter(recipes.values())).shape[0]
    count = -(-n // chunk)
    parts, start = [], 0
    for i in range(count):
        sl = slice(start, start + n // count + (i < n % count))
        start = sl.stop
        part = {"recipes": {k: v[sl] for k, v in recipes.items()}}
        for key in ("images", "features", *extra):
            if inputs.get(key) is not None:
                part[key] = inputs[key][sl]
        parts.append(part)
    return parts


def representations(step, kind: str, out) -> dict[str, torch.Tensor]:
    """The tensors the loss reads from a forward output: ``image`` and ``recipe`` embeddings of
    paired batches, plus the recipe components (``component:NAME``) when H-T's recipe loss is on
    (recipe-only batches: the components alone)."""
    reps = {}
    if kind != "recipe":
        reps["image"], reps["recipe"] = out.image, out.recipe
    if kind == "recipe" or step.recipe_loss is not None:
        for name, value in out.components.items():
            reps[f"component:{name}"] = value
    return reps


def _output(reps: dict[str, torch.Tensor]):
    comps = {k.split(":", 1)[1]: v for k, v in reps.items() if k.startswith("component:")}
    return EmbedderOutput(image=reps.get("image"), recipe=reps.get("recipe"), components=comps)


def surrogate(step, kind: str, out, cached: dict[str, Any]) -> torch.Tensor:
    """``Σ <rep, cached gradient>`` over this chunk's representations, plus ``Σ <φ, ∂L/∂φ>`` over
    the loss's parameters when ``cached["params"]`` holds their gradients (last chunk): a scalar
    whose gradient is the cached one (called by :meth:`TrainStep.forward`, inside DDP)."""
    reps = representations(step, kind, out)
    total = None
    for name, grad in cached["reps"].items():
        term = (reps[name].float() * grad).sum()
        total = term if total is None else total + term
    for p, grad in zip(step.loss_parameters(), cached.get("params") or ()):
        if grad is not None:
            total = total + (p * grad).sum()
    return total


def batchnorm_in_training(module: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``module`` that normalise with batch statistics (training
    mode): under a gradient cache they see per-chunk statistics."""
    return [name for name, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
            and any(p.requires_grad for p in m.parameters())] if module.training else []


def _bn_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]


def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class GradCache:
    """One training step of ``step`` (a :class:`~recipekit.training.build.TrainStep`) with the
    gradient cache, ``chunk`` samples at a time (the algorithm: module docstring)."""

    def __init__(self, step, chunk: int):
        if chunk < 1:
            raise ValueError(f"grad cache chunk must be >= 1, got {chunk}")
        self.step_module, self.chunk = step, int(chunk)

    def step(self, module, kind: str, inputs: dict, *, divisor: float = 1.0, scaler=None, sync: bool = True,
             ddp=None) -> dict[str, torch.Tensor]:
        """Back-propagate ``loss / divisor`` of the batch ``inputs`` (as :meth:`TrainStep.forward`
        takes them) into the parameters' ``.grad``; return the losses, detached. ``module``: the
        step or its DDP wrapper (``ddp``); ``sync``: whether this micro-batch ends the optimiser
        step (its last chunk then lets DDP average the gradients); ``scaler``: the fp16 GradScaler."""
        step = self.step_module
        dev = step.info.device
        # [gan]: the joint adversarial terms are taken in step 3, on each chunk's own samples
        gan = step.adversary is not None and kind == "pair"
        chunks = split_inputs(inputs, self.chunk, extra=("labels", "ingredients") if gan else ())
        size = next(iter(inputs["recipes"].values())).shape[0]
        # 1. embed chunk by chunk without a graph, remembering each chunk's random state
        states, parts = [], []
        bn = _bn_buffers(step)
        saved = [b.clone() for b in bn]
        with torch.no_grad():
            for part in chunks:
                states.append(_rng_state(dev))
                out = step.embed(kind, part["recipes"], part.get("images"), part.get("features"))
                reps = representations(step, kind, out)
                parts.append({k: v.detach() for k, v in reps.items()})
        for b, s in zip(bn, saved):  # the replay updates the running statistics, once per chunk
            b.copy_(s)
        # 2. the full-batch loss on leaf embeddings and its gradient
        leaves = {k: torch.cat([p[k] for p in parts]).float().requires_grad_() for k in parts[0]}
        losses = step.objective(kind, _output(leaves), inputs.get("labels"))
        params = [p for p in step.loss_parameters()]
        wanted = list(leaves.values()) + [p for p in params if p.requires_grad]
        grads = torch.autograd.grad(losses["total"], wanted, allow_unused=True)
        rep_grads = dict(zip(leaves, grads[: len(leaves)]))
        it = iter(grads[len(leaves):])
        param_grads = [next(it) if p.requires_grad else None for p in params]
        param_grads = [None if g is None else g / divisor for g in param_grads]
        after = _rng_state(dev)  # the state a plain step would leave: the loss drew after the forward
        # 3. replay each chunk with a graph and back-propagate the surrogate ([gan]: plus the
        #    chunk's share of the joint adversarial terms, which read the chunk's own samples)
        step.stash_parts = []
        logs: dict[str, torch.Tensor] = {}
        start = 0
        for i, part in enumerate(chunks):
            n = next(iter(part["recipes"].values())).shape[0]
            last = i == len(chunks) - 1
            cached = {"reps": {k: (g[start:start + n] / divisor if g is not None
                                   else torch.zeros_like(leaves[k][start:start + n]))
                               for k, g in rep_grads.items()},
                      "params": param_grads if last else None}
            if gan:
                cached["gan_weight"] = n / size / divisor
            start += n
            _set_rng_state(states[i], dev)
            ctx = ddp.no_sync() if ddp is not None and not (sync and last) else nullcontext()
            with ctx:
                res = module(kind, **part, cached_grads=cached)
                out = res["total"]
                (scaler.scale(out) if scaler is not None else out).backward()
            for key, value in res.items():  # [gan] the joint terms' values: the sample-weighted mean over chunks
                if key != "total":
                    logs[key] = logs.get(key, 0.0) + value.detach().float() * (n / size)
        _set_rng_state(after, dev)
        result = {k: v.detach() for k, v in losses.items()}
        if gan:
            step.stash = {k: torch.cat([p[k] for p in step.stash_parts]) for k in step.stash_parts[0]}
            step.stash_parts = []
            result.update(logs)
            result["total"] = result["total"] + logs["gan_total"]
        return result
