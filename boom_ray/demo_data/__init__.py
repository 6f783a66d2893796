"""Builders of the bundled demo data: text that installs offline (Debian, PyPI) turned into a
FlagEmbedding training corpus plus held-out evaluation suites. Nothing here is part of the
pipeline; the pipeline reads what these write."""
