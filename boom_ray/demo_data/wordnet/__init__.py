"""WordNet 3.0 (Debian `wordnet-base`) -> a multi-task corpus and held-out suites.

`database` parses the wndb files, `graph` walks the synset relations, `tasks` turns synsets
into training tasks and suites, and `build` writes them (`boom build-wordnet`)."""

from boom_ray.demo_data.wordnet.build import build
from boom_ray.demo_data.wordnet.database import WordNetError, load_wordnet
from boom_ray.demo_data.wordnet.tasks import BuildOptions

__all__ = ["BuildOptions", "WordNetError", "build", "load_wordnet"]
