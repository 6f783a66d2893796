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
# Debian's wordnet-base (WordNet 3.0, /usr/share/wordnet): the source of the bundled demo data;
# the tests that rebuild the sample from it skip without it. Installed where we may (root + apt).
if [ ! -f /usr/share/wordnet/data.noun ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian wordnet-base"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base) \
      >/dev/null || echo "setup: could not install wordnet-base; WordNet rebuild tests will skip" >&2
  else
    echo "setup: wordnet-base not installed (apt-get install wordnet-base); WordNet rebuild tests will skip"
  fi
fi
echo "setup: ready ($VENV)"
