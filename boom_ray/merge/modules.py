"""The weights of a sentence-transformers model's own modules (a Dense projection head, a Router's
sub-models, ...), stored beside the transformer's top-level weights as `2_Dense/model.safetensors`
or `2_Dense/pytorch_model.bin`.

Why: the output copies every module's config from one input, so a merge of the top-level weights
alone gives a model whose modules.json names a Dense head with no weights, and
`SentenceTransformer(out)` fails to load it. Every weighted module is therefore merged as well, by
the same method, weights, parameters, output dtype and memory budget, one module after another
through the streaming merge. Tensor names inside a module are the module's own (`linear.weight`:
outside any layer, so per-layer gradients take their first value there).

A weighted module is a folder at or below a path that modules.json lists (the top level, path "",
is the streaming merge's own) holding `model.safetensors` (or a sharded index) or
`pytorch_model.bin`. Every input and the base must have the same weighted modules, with the same
tensors; the error names the module. A `pytorch_model.bin` is read with torch's weights-only
unpickler (no code in it runs) and converted to safetensors in a temporary folder; a merged module
is always one `model.safetensors`, the file sentence-transformers reads first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import tempfile
from typing import Any, Iterator

import pyarrow.fs as pafs

from boom_ray.errors import BoomError
from boom_ray.merge.executor import InputMismatchError, LocalInputs, StreamingMerge, check_inputs
from boom_ray.merge.io import INDEX_FILE, SINGLE_FILE, CheckpointError, index_model, weight_files
from boom_ray.runtime import storage

MODULES_JSON = "modules.json"
BIN_FILE = "pytorch_model.bin"
WEIGHT_NAMES = (SINGLE_FILE, INDEX_FILE, BIN_FILE)
"""A module folder's weight files, in the order sentence-transformers looks for them."""
ONE_FILE = 1 << 62
"""The shard size of a merged module: always one `model.safetensors`, the only name
sentence-transformers' module loader reads."""


class ModuleLayoutError(InputMismatchError):
    """The inputs' sentence-transformers modules differ in which ones carry weights."""


def _listed_paths(fs: pafs.FileSystem, root: str, model_dir: str) -> list[str]:
    """The non-top-level module folders modules.json lists, in its order ([] without one)."""
    path = storage.join(root, MODULES_JSON)
    if not storage.exists(fs, path):
        return []
    try:
        entries = storage.read_json(fs, path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise CheckpointError(f"{path}: expected a list of modules")
    out = []
    for i, entry in enumerate(entries):
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str):
            raise CheckpointError(f"{path}: module {i} has no `path`")
        rel = posixpath.normpath(rel) if rel else ""
        if rel.startswith(("/", "..")):
            raise CheckpointError(f"{path}: module {i} has path {entry['path']!r}, outside {model_dir}")
        if rel not in ("", ".") and rel not in out:
            out.append(rel)
    return out


def weighted_modules(model_dir: str) -> dict[str, str]:
    """Module folder (relative, e.g. `2_Dense`) -> the weight file sentence-transformers would read
    there, for every weighted module of the model at `model_dir` (local path or URI), in
    modules.json order; {} for a model without modules.json or without weighted modules."""
    fs, root = storage.resolve(model_dir)
    found: dict[str, str] = {}
    for rel in _listed_paths(fs, root, model_dir):
        names: dict[str, set[str]] = {}
        selector = pafs.FileSelector(storage.join(root, rel), recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            folder, name = posixpath.split(posixpath.relpath(info.path, root))
            if info.type == pafs.FileType.File and name in WEIGHT_NAMES and \
                    not any(part.startswith(".") for part in folder.split("/")):
                names.setdefault(folder, set()).add(name)
        for folder in sorted(names):
            found[folder] = next(n for n in WEIGHT_NAMES if n in names[folder])
    return found


def module_weight_files(model_dir: str) -> list[tuple[str, str]]:
    """(module folder, filesystem path) of every weight file the weighted modules are read from,
    for fingerprints: a retrained head changes the model."""
    fs, root = storage.resolve(model_dir)
    out = []
    for module, name in weighted_modules(model_dir).items():
        if name == BIN_FILE:
            out.append((module, storage.join(root, module, name)))
        else:
            out.extend((module, path) for path in weight_files(storage.join(model_dir, module)))
    return out


def check_layouts(labels: list[str], layouts: list[dict[str, str]]) -> None:
    """Every model has the first one's weighted modules and no other."""
    ref_label, ref = labels[0], layouts[0]
    for label, layout in zip(labels[1:], layouts[1:]):
        missing = [m for m in ref if m not in layout]
        if missing:
            raise ModuleLayoutError(f"module {missing[0]!r} has weights in {ref_label} but not in {label}; "
                                    "merged models need the same sentence-transformers modules")
        extra = [m for m in layout if m not in ref]
        if extra:
            raise ModuleLayoutError(f"module {extra[0]!r} has weights in {label} but not in {ref_label}; "
                                    "merged models need the same sentence-transformers modules")


def bin_to_safetensors(src: str, dst: str) -> None:
    """Write the state dict in `src` (a pytorch_model.bin) to `dst` as safetensors, read with
    torch's weights-only unpickler: a pickle that would run code is refused, not run."""
    try:
        import torch  # lazy: torch, only for a module stored as pytorch_model.bin
        from safetensors.torch import save_file  # lazy: torch, only for a module stored as pytorch_model.bin
    except ImportError:
        raise CheckpointError(f"{src}: reading pytorch_model.bin needs torch; install it, or save the module "
                              "as model.safetensors") from None
    try:
        state = torch.load(src, weights_only=True, map_location="cpu")
    except Exception as exc:  # UnpicklingError for unsafe content, RuntimeError for a corrupt file, ...
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{src}: cannot read it as weights only ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{src}: expected a state dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{src}: entry {bad[0]!r} is not a tensor")
    # clone: tied tensors share storage, which safetensors refuses to write
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, dst, metadata={"format": "pt"})


@contextlib.contextmanager
def _in_module(module: str) -> Iterator[None]:
    """Errors of one module's merge say which module (tensor names alone are ambiguous)."""
    try:
        yield
    except BoomError as exc:
        if str(exc).startswith(f"module {module!r}"):
            raise
        try:
            named = type(exc)(f"module {module!r}: {exc}")
        except TypeError:  # an error class with another signature: keep it as it is
            raise exc from None
        raise named from None


@dataclasses.dataclass
class ModuleMerges:
    """The merges of a model's weighted modules, checked and planned up front (see the module
    docstring); `run` writes each into its folder of the output."""

    jobs: dict[str, StreamingMerge]

    @classmethod
    def plan(cls, inputs: LocalInputs, files_from: str, memory_budget: int, threads: int | None,
             stack: contextlib.ExitStack, progress: bool = True) -> "ModuleMerges":
        """Check the inputs' module layouts (and that `files_from`, whose modules.json the output
        gets, names no weighted module the inputs lack) and plan one streaming merge per module;
        `stack` holds the temporary folders of converted pytorch_model.bin modules."""
        labels = inputs.paths + ([inputs.base] if inputs.base else [])
        layouts = [weighted_modules(p) for p in labels]
        check_layouts(labels, layouts)
        extra = [m for m in weighted_modules(files_from) if m not in layouts[0]]
        if extra:
            raise ModuleLayoutError(f"module {extra[0]!r} has weights in {files_from}, whose files the output gets, "
                                    f"but not in the merged models ({labels[0]})")
        jobs = {}
        n = len(inputs.paths)
        for module in layouts[0]:
            with _in_module(module):
                folders = [os.path.join(p, module) for p in labels]
                dirs = [_as_safetensors(f, layout[module], stack) for f, layout in zip(folders, layouts)]
                check_inputs(folders, [index_model(d) for d in dirs])  # the error names the real folders
                sub = dataclasses.replace(inputs, paths=dirs[:n], base=dirs[n] if inputs.base else None)
                jobs[module] = StreamingMerge(sub, memory_budget, ONE_FILE, progress=progress, threads=threads)
        return cls(jobs)

    def output_file_sizes(self) -> list[int]:
        """Bytes of every weight file `run` will write (the free-space check)."""
        return [size for job in self.jobs.values() for size in job.output_file_sizes()]

    def run(self, out_dir: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Merge every module into `out_dir/<module>/`; returns `summary` (the top-level merge's)
        with the modules' tensors and bytes added and `modules` listing them."""
        if not self.jobs:
            return summary
        summary = dict(summary)
        for module, job in self.jobs.items():
            folder = os.path.join(out_dir, module)
            os.makedirs(folder, exist_ok=True)
            with _in_module(module):
                done = job.run(folder)
            summary["tensors"] += done["tensors"]
            summary["bytes"] += done["bytes"]
        summary["modules"] = list(self.jobs)
        return summary


def _as_safetensors(folder: str, weight_file: str, stack: contextlib.ExitStack) -> str:
    """A folder holding this module's weights as safetensors: `folder` itself, or for a
    pytorch_model.bin a temporary folder (removed with `stack`) holding its conversion."""
    if weight_file != BIN_FILE:
        return folder
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="boom-merge-module-"))
    bin_to_safetensors(os.path.join(folder, BIN_FILE), os.path.join(tmp, SINGLE_FILE))
    return tmp
