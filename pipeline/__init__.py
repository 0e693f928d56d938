"""recipekit.pipeline: the `prepare` ETL (no torch imported anywhere in this package).

Stages, in order: ``parse`` -> ``ingredients`` -> ``word2vec`` -> ``classes`` -> ``store``
(the LMDB recipe store) -> ``shard`` (photos and recipes to WebDataset tars).
:func:`recipekit.pipeline.prepare.prepare` runs them; each stage module also
exposes its own function.
"""
