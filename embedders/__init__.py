"""recipekit.embedders: image and recipe towers into a shared space (see issue 4)."""
