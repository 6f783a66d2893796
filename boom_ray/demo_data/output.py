"""Write a builder's output: `corpus/<task>.jsonl`, `suites/{dev,test}/<suite>/` and top-level
files (LICENSE, README.md, manifest.json), into a staging folder renamed into place on success,
so a failed build never leaves half an output where the demo config points."""

from __future__ import annotations

import json
from pathlib import Path

from boom_ray.demo_data.common import Suite, suite_json
from boom_ray.runtime.storage import resolve, staged_dir


def check_out(out: Path, builder: str, error: type[Exception]) -> None:
    """Refuse to replace a folder that is not an earlier build of `builder` (its manifest says
    so): --out must not wipe user data."""
    if out.exists() and any(out.iterdir()):
        manifest = out / "manifest.json"
        try:
            ours = json.loads(manifest.read_text()).get("builder") == builder
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise error(f"{out} exists and is not an earlier {builder.removeprefix('boom ')} output "
                        f"(no {manifest.name}); choose an empty or new --out")


def readme_head(title: str, origin: str, manifest: dict, held_out: str) -> list[str]:
    """The opening lines of a build's README.md, the same for every builder: title, origin, the
    command that rebuilds it and the options behind its sizes; `held_out` ends the sentence that
    starts with the holdout fraction ("... 20% of <held_out>")."""
    opts = manifest["options"]
    return [f"# {title}", "", origin, "", "```", manifest["command"], "```", "",
            f"Seed {opts['seed']}, at most {opts['max_rows_per_task'] or 'all'} rows per task, "
            f"{opts['suite_size']} items per suite, {opts['holdout']:.0%} of {held_out}"]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_suite(folder: Path, suite: Suite) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in suite.files.items():
        if isinstance(content, str):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(content, encoding="utf-8")
        else:
            write_jsonl(folder / name, content)
    (folder / "suite.json").write_text(json.dumps(suite_json(suite), indent=2) + "\n")


def write_build(out: Path, tasks: dict[str, list[dict]], suites: dict[str, list[Suite]],
                texts: dict[str, str], manifest: dict) -> None:
    """`tasks`: task name (may hold `/`: nested folders) -> rows; `suites`: split -> suites;
    `texts`: top-level file name -> content (LICENSE, README.md); manifest.json last."""
    fs, final = resolve(str(out))
    with staged_dir(fs, final) as tmp:
        root = Path(tmp)
        for name, rows in tasks.items():
            write_jsonl(root / "corpus" / f"{name}.jsonl", rows)
        for split, built in suites.items():
            for suite in built:
                write_suite(root / "suites" / split / suite.name, suite)
        for name, text in texts.items():
            (root / name).write_text(text, encoding="utf-8")
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
