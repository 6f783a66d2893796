"""Model cards (README.md) for exports, merges and updates: `build` makes the text from dicts
(pure), `write` gathers those dicts at the write sites and writes the file, `evaluated` adds a
model's scores once the run has evaluated it. Kept outside boom_ray.model so that the torch-free
merge package can write cards without the model code."""
