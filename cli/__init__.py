"""recipekit.cli: the thin `recipekit` command line; each command calls one library function."""
