"""Demo data from several offline sources (`boom build-demo-data`): WordNet and FOLDOC for
training and in-domain suites; Jargon File, V.E.R.A., The Devil's Dictionary and Debian package
descriptions for out-of-domain suites only.

`dictd` reads dictd databases, `sources` cleans each source's articles into entries, `debian`
reads package descriptions, `glossary` turns entries into tasks and suites, `build` writes it
all (with `readme` for README.md and LICENSE)."""

from boom_ray.demo_data.demo.build import SOURCES, Paths, build
from boom_ray.demo_data.demo.dictd import DemoDataError

__all__ = ["SOURCES", "DemoDataError", "Paths", "build"]
