"""The import rules that the README states, checked on the source:

* no import circle among boom_ray's modules, counting imports inside functions too;
* boom_ray's own modules are imported at the top of a file; an import inside a function stays
  only where it would pull a heavy library (torch, ray, deepspeed, numba, transformers, ...) onto
  a path that must start fast, and says so with a `# lazy:` comment on its line;
* `boom --help` (every CLI module), merge/ and plan/ import no torch, Ray, DeepSpeed or
  transformers: `boom merge` and `boom plan` start in well under a second.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "boom_ray"
HEAVY = ("torch", "ray", "deepspeed", "transformers", "sentence_transformers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The boom_ray modules an import statement loads (`from pkg import mod` names a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative import
            anchor = module.split(".")
            if not MODULES[module].name == "__init__.py":
                anchor = anchor[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    return [n for n in names if n in MODULES]


def _imports(module: str) -> tuple[set[str], list[tuple[int, str]]]:
    """(boom_ray modules imported at module level, [(line, target)] imported inside functions)."""
    tree = ast.parse(MODULES[module].read_text())
    top: set[str] = set()
    inner: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, module):
                    if in_function:
                        inner.append((child.lineno, target))
                    else:
                        top.add(target)
            elif isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue  # annotations only: never executed
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, inner


def test_no_import_circle():
    graph = {}
    for m in MODULES:  # lazy imports count too: a circle hidden inside a function is still one
        top, inner = _imports(m)
        graph[m] = {t for t in top | {t for _, t in inner} if t != m and not m.startswith(t + ".")}
    # a package's __init__ importing its own submodule is not a circle a reader follows
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_own_modules_imported_at_the_top_unless_marked_lazy():
    unmarked = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for lineno, target in sorted(set(_imports(module)[1])):
            # the statement may span lines: the marker may sit on any of them up to the closing paren
            span = lines[lineno - 1: lineno + 6]
            statement = []
            for line in span:
                statement.append(line)
                if ")" in line or not line.rstrip().endswith(("(", ",")):
                    break
            if not any("# lazy:" in line for line in statement):
                unmarked.append(f"{path.relative_to(PACKAGE.parent)}:{lineno} imports {target}")
    assert not unmarked, ("imports of boom_ray modules inside functions without a '# lazy: <library>' comment:\n"
                          + "\n".join(unmarked))


FAST_PATHS = """
import importlib, pkgutil, sys
import boom_ray.cli as cli, boom_ray.merge as merge, boom_ray.plan as plan
cli.build_parser()  # every subcommand module, as `boom --help` loads them
for pkg in (merge, plan):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(m.name)
print(sorted({m.split(".")[0] for m in sys.modules} & set(%r)))
""" % (HEAVY,)


def test_cli_merge_and_plan_import_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", FAST_PATHS], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"boom --help, merge/ or plan/ imported {out.strip()}"


LAYERS = [
    ("errors",),
    ("config",),
    ("runtime",),
    ("corpus", "model", "losses", "cards", "demo_data"),
    ("train", "merge", "eval", "plan"),
    ("sweep",),
    ("workflows",),
    ("cli",),
]
"""The README's picture, bottom up: a folder imports (at module level) only its own and lower layers."""


def _layer(module: str) -> int:
    folder = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if folder in names:
            return rank
    raise AssertionError(f"{module}: its folder is in no layer of LAYERS; add it where it belongs")


def test_dependencies_point_down_the_layers():
    upward = [f"{m} imports {t}" for m in MODULES if m != "boom_ray"
              for t in _imports(m)[0] if t != "boom_ray" and _layer(t) > _layer(m)]
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))
