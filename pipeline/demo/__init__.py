"""The embedded synthetic demo corpus: a deterministic, Recipe1M-layout generator.

    from recipekit.pipeline.demo import write_demo_corpus
    counts = write_demo_corpus("demo-data", recipes=1000, seed=0)

See :mod:`recipekit.pipeline.demo.generate` (text) and :mod:`.render` (photos).
"""

from .generate import DemoRecipe, iter_recipes, write_demo_corpus
from .render import load_vocabulary, render_image

__all__ = ["DemoRecipe", "iter_recipes", "load_vocabulary", "render_image", "write_demo_corpus"]
