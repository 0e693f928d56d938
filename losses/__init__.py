"""recipekit.losses: retrieval losses from the Recipe1M literature (see issue 4)."""
