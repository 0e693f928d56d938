"""Small stand-ins shared by the trainer's gradient tests (imported by test modules, not collected)."""

import torch


class LinearEmbedder(torch.nn.Module):
    """A stand-in embedder: two linear towers (4-d "images", 5-d "recipes" -> 3-d unit vectors),
    enough to carry gradients through any loss."""

    def __init__(self):
        super().__init__()
        self.img, self.rec = torch.nn.Linear(4, 3), torch.nn.Linear(5, 3)

    def forward(self, images=None, recipes=None):
        from recipekit.embedders.model import EmbedderOutput

        nf = torch.nn.functional.normalize
        return EmbedderOutput(image=nf(self.img(images), dim=-1), recipe=nf(self.rec(recipes["x"]), dim=-1))
