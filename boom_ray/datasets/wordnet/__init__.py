"""WordNet 3.0 (Debian `wordnet-base`) -> a multi-task corpus and held-out suites.

`database` parses the wndb files, `graph` walks the synset relations, `tasks` turns synsets
into training tasks and suites, and `build` writes them (`boom build-wordnet`)."""

from boom_ray.datasets.wordnet.build import build
from boom_ray.datasets.wordnet.database import WordNetError, load_wordnet
from boom_ray.datasets.wordnet.tasks import BuildOptions

__all__ = ["BuildOptions", "WordNetError", "build", "load_wordnet"]
