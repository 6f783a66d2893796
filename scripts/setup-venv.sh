#!/usr/bin/env bash
# Create the project's virtual environment and install boom-ray with its test tools.
# On a machine without an NVIDIA GPU it installs the CPU build of torch and refuses to go on
# if CUDA wheels slipped in (they are several GB and useless there).
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_CPU_SPEC=${TORCH_CPU_SPEC:-torch==2.13.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

"${PIP[@]}" --quiet --upgrade "pip>=24" setuptools wheel

if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, installing CUDA torch"
  "${PIP[@]}" "torch>=2.4"
else
  echo "setup: no GPU, installing CPU torch ($TORCH_CPU_SPEC)"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${PIP[@]}" "$TORCH_CPU_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    "${PIP[@]}" "$TORCH_CPU_SPEC"
  fi
fi

# torch is already satisfied, so nothing below can pull another (CUDA) build of it.
"${PIP[@]}" --quiet -e ".[dev]"

if ! command -v nvidia-smi >/dev/null 2>&1 && "$VENV/bin/python" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
  echo "setup: CUDA packages were installed on a machine without a GPU." >&2
  echo "       Remove $VENV and rerun with TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" >&2
  exit 1
fi
# Debian's text sources of the bundled demo data (boom build-demo-data, boom build-wordnet):
# WordNet 3.0 (/usr/share/wordnet) and the dictd databases FOLDOC, Jargon File, V.E.R.A. and
# The Devil's Dictionary (/usr/share/dictd). The tests that rebuild the samples from them skip
# without them. Installed where we may (root + apt).
DEBIAN_SOURCES=""
[ -f /usr/share/wordnet/data.noun ] || DEBIAN_SOURCES=" wordnet-base"
for dict in foldoc jargon vera devil; do
  [ -f "/usr/share/dictd/$dict.index" ] || DEBIAN_SOURCES="$DEBIAN_SOURCES dict-$dict"
done
if [ -n "$DEBIAN_SOURCES" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages:$DEBIAN_SOURCES"
    # shellcheck disable=SC2086  # a list of package names
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $DEBIAN_SOURCES) \
      >/dev/null || echo "setup: could not install$DEBIAN_SOURCES; the demo-data rebuild tests will skip" >&2
  else
    echo "setup: not installed:$DEBIAN_SOURCES (apt-get install them); the demo-data rebuild tests will skip"
  fi
fi
echo "setup: ready ($VENV)"
