"""recipekit.embedders: image and recipe towers into a shared space (docs/models.md).

Registry: :func:`list_embedders`, :func:`create_embedder`, :func:`get_config` (JSON configs
in ``configs/`` and :func:`register_embedder` functions); recipe towers are registered with
:func:`register_recipe_tower` (:func:`list_recipe_towers`, :func:`recipe_tower_spec`);
:func:`load_embedder` reads :meth:`JointEmbedder.save` files. Text:
:class:`Vocabulary`, :func:`tokenize`, :func:`tokenise_recipe`, :func:`collate_recipes`,
:func:`embedding_matrix_from_keyedvectors`, :func:`load_word2vec_matrix`. Everything that
builds a network needs torch (``pip install recipekit[train]``); names are imported lazily,
so ``import recipekit.embedders`` and the text helpers work without it.
"""

from __future__ import annotations

from recipekit.core.lazy import lazy_exports

_EXPORTS = {
    "list_embedders": "registry",
    "create_embedder": "registry",
    "get_config": "registry",
    "register_embedder": "registry",
    "register_recipe_tower": "registry",
    "recipe_tower_spec": "registry",
    "list_recipe_towers": "registry",
    "RecipeTowerSpec": "registry",
    "Vocabulary": "text",
    "tokenize": "text",
    "tokenise_recipe": "text",
    "collate_recipes": "text",
    "embedding_matrix_from_keyedvectors": "text",
    "load_word2vec_matrix": "text",
    "PAD_ID": "text",
    "UNK_ID": "text",
    "JointEmbedder": "model",
    "EmbedderOutput": "model",
    "load_embedder": "model",
    "ImageTower": "image",
    "JERecipeTower": "recipe_je",
    "HTRecipeTower": "recipe_ht",
    "MiniLMRecipeTower": "sentence",
    "WordPieceVocabulary": "sentence",
    "MatchingHead": "matching",
}

__all__ = sorted(_EXPORTS)

_TORCH_HINT = "recipekit.embedders needs torch and torchvision: pip install 'recipekit[train]'"

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, _TORCH_HINT)
