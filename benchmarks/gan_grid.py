#!/usr/bin/env python
"""Real vs generated photos of test recipes for a GAN-family run (docs/img, docs/results.md).

    python benchmarks/gan_grid.py RUN PREPARED --split test --n 8 --out docs/img/gan_grid.png
    python benchmarks/gan_grid.py RUN_ACME PREPARED --also RUN_R2GAN RUN_TNLBT --out docs/img/gan_demo.png

Top row: the first photo of the first N recipes (by id) of the split's shards, resized to the
generator's size; then one row per run (``RUN``, then each ``--also`` run, all with generators of
the same size): one photo generated from each recipe by its ``best.pt``
(``JointEmbedder.generate_images``, eval mode, noise from ``--seed``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path


def first_pairs(prepared: Path, split: str, n: int) -> list[tuple[str, dict, bytes]]:
    found: dict[str, dict] = {}
    for tar in sorted((prepared / "shards" / split).glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                key, _, member = m.name.partition(".")
                entry = found.setdefault(key, {})
                if member == "json":
                    entry["json"] = json.loads(tf.extractfile(m).read().decode("utf-8"))
                elif member.endswith(".jpg") and "jpg" not in entry:
                    entry["jpg"] = tf.extractfile(m).read()
    keys = sorted(k for k, v in found.items() if "json" in v and "jpg" in v)[:n]
    return [(k, found[k]["json"], found[k]["jpg"]) for k in keys]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("prepared", type=Path)
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="more runs, a row each")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import torch
    from PIL import Image
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize
    from torchvision.utils import save_image

    from recipekit.core.io import atomic_path
    from recipekit.core.layout import Run
    from recipekit.embedders import load_embedder

    models = [load_embedder(Run(run).best) for run in [args.run, *args.also]]
    size = models[0].generator.image_size
    if any(m.generator.image_size != size for m in models):
        raise SystemExit("gan_grid.py: the runs' generators make photos of different sizes")
    pairs = first_pairs(args.prepared, args.split, args.n)
    recipes = [{"title": r.get("title", ""), "ingredients": [{"text": t} for t in r.get("ingredient_lines") or []],
                "instructions": [{"text": t} for t in r.get("instructions") or []]} for _, r, _ in pairs]
    fakes = [m.generate_images(recipes, n=1, seed=args.seed, device="cpu")[:, 0] for m in models]
    real = []
    for _, _, jpg in pairs:
        with Image.open(io.BytesIO(jpg)) as im:
            t = pil_to_tensor(im.convert("RGB")).float() / 255
        real.append(center_crop(resize(t, size, antialias=True), [size, size]))
    grid = torch.cat([torch.stack(real), *fakes])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        save_image(grid, tmp, nrow=len(pairs), padding=2, format="png")
    print(f"wrote {args.out}: {len(pairs)} {args.split} recipes ({', '.join(k for k, _, _ in pairs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
