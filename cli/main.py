import click


@click.group()
def main() -> None:
    """recipekit: cross-modal recipe retrieval."""


if __name__ == "__main__":
    main()
