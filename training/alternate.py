"""im2recipe's alternating freezing of the two branches (``train.freeze_schedule = "alternate"``).

im2recipe (Salvador et al., CVPR 2017; github.com/torralba-lab/im2recipe-Pytorch, train.py)
starts with its vision branch frozen and the rest training; each time validation has not
improved for ``patience`` validations in a row it swaps them (the frozen branch trains, the
other one freezes), and after the first swap the patience becomes 3. Which parameters form a
branch is ``train.alternate_split``:

* ``"backbone"`` (im2recipe's own split): the image backbone against everything else (the
  image head, the recipe tower, a matching head and the losses' parameters, e.g. the
  classifier of the pairwise loss);
* ``"towers"``: the whole image tower (backbone and head) against the recipe tower, a
  matching head and the losses' parameters. This is the split that still trains both sides
  when the backbone itself never trains (``train.cache_features``, ``image.freeze_backbone``).

Freezing here means ``requires_grad = False`` (no gradient, so the optimiser leaves those
parameters and their Adam moments alone; a frozen backbone is also put in eval mode, as the
trainer does for ``freeze_backbone_epochs``), where im2recipe set the frozen group's learning
rate to 0. A parameter that is frozen for another reason (a frozen MiniLM encoder, a backbone
frozen by ``freeze_backbone_epochs``) stays frozen when its branch's turn comes.

:class:`BranchSwitcher` is a module with buffers only, so the run's checkpoint keeps which
branch is frozen and the count of validations without improvement (``--resume`` continues
the schedule).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["BranchSwitcher", "SPLITS"]

SPLITS = ("backbone", "towers")
BRANCHES = ("image", "recipe")


class BranchSwitcher(nn.Module):
    """Which branch is frozen and when to swap: :meth:`after_validation` per validation,
    :meth:`apply` to set ``requires_grad``, :attr:`image_frozen` for the backbone."""

    def __init__(self, model, loss_modules, *, split: str = "backbone", patience: int = 1, patience_after: int = 3):
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"alternate_split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.split, self.patience, self.patience_after = split, int(patience), int(patience_after)
        backbone = {id(p) for p in model.image_tower.backbone.parameters()}
        image = {id(p) for p in model.image_tower.parameters()} if split == "towers" else set(backbone)
        every = list(model.parameters()) + [p for m in loss_modules if m is not None for p in m.parameters()]
        # the backbone follows the trainer's own freezing (set_backbone_frozen); the rest is toggled here
        self._params = {"image": [p for p in every if id(p) in image and id(p) not in backbone],
                        "recipe": [p for p in every if id(p) not in image]}
        self._trainable = {id(p): p.requires_grad for ps in self._params.values() for p in ps}
        # 0 = the image branch is frozen (im2recipe's start), 1 = the recipe branch
        self.register_buffer("frozen_code", torch.zeros((), dtype=torch.long))
        self.register_buffer("stale", torch.zeros((), dtype=torch.long))
        self.register_buffer("switches", torch.zeros((), dtype=torch.long))

    @property
    def frozen(self) -> str:
        """The branch frozen now: ``"image"`` or ``"recipe"``."""
        return BRANCHES[int(self.frozen_code)]

    @property
    def image_frozen(self) -> bool:
        return self.frozen == "image"

    def params(self, branch: str) -> list[nn.Parameter]:
        """The parameters this switcher toggles for ``branch`` (the backbone excluded)."""
        return list(self._params[branch])

    def apply(self) -> None:
        """``requires_grad`` of the toggled parameters: off in the frozen branch, as built elsewhere."""
        for branch, params in self._params.items():
            for p in params:
                p.requires_grad_(self._trainable[id(p)] and branch != self.frozen)

    def after_validation(self, improved: bool) -> bool:
        """Count a validation; True when the branches swap (takes effect at the next :meth:`apply`)."""
        self.stale.fill_(0 if improved else int(self.stale) + 1)
        patience = self.patience if int(self.switches) == 0 else self.patience_after
        if int(self.stale) < patience:
            return False
        self.frozen_code.fill_(1 - int(self.frozen_code))
        self.stale.fill_(0)
        self.switches.fill_(int(self.switches) + 1)
        return True

    def extra_repr(self) -> str:
        return f"split={self.split}, frozen={self.frozen}, patience={self.patience}/{self.patience_after}"
