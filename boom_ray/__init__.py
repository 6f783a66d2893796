"""boom-ray: BOOM (bagging-based robust model merging) for text embeddings on Ray."""

__version__ = "0.1.0"
