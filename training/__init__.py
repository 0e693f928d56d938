"""recipekit.training: the trainer behind ``recipekit train`` (issue #5)."""
