#!/usr/bin/env bash
# Install the offline sources of lmforge's embedded default corpus.
#
#   bash scripts/setup_sources.sh [--no-apt] [--no-npm] [--no-pip]
#
# - Debian (apt, needs root or sudo): python3.11-doc (English prose + HTML),
#   bsdgames (quiz Q:A files for multiple-choice items).
# - npm: chinese-poetry (classical Chinese poems as JSON) into
#   ${LMFORGE_SOURCES:-$HOME/.cache/lmforge}/npm
# - PyPI, into the CURRENT python (${PYTHON:-python3}): chatterbot-corpus (dialogs),
#   opencc (traditional -> simplified Chinese).
#
# Each step that fails is reported and the others go on: `lmforge corpus build`
# builds from whatever is present and names what is missing.
set -u

PYTHON=${PYTHON:-python3}
SOURCES=${LMFORGE_SOURCES:-$HOME/.cache/lmforge}
DO_APT=1; DO_NPM=1; DO_PIP=1
for arg in "$@"; do
  case "$arg" in
    --no-apt) DO_APT=0 ;;
    --no-npm) DO_NPM=0 ;;
    --no-pip) DO_PIP=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "setup_sources.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

failed=()
step() {  # step NAME CMD...: run, report, remember failures
  local name=$1; shift
  echo "== $name: $*"
  if "$@"; then echo "== $name: ok"; else echo "== $name: FAILED" >&2; failed+=("$name"); fi
}

if [ "$DO_APT" = 1 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  step apt-update $SUDO apt-get update -qq
  step apt-python3.11-doc $SUDO apt-get install -y -qq --no-install-recommends python3.11-doc
  step apt-bsdgames $SUDO apt-get install -y -qq --no-install-recommends bsdgames
fi

if [ "$DO_NPM" = 1 ]; then
  mkdir -p "$SOURCES/npm"
  step npm-chinese-poetry npm install --prefix "$SOURCES/npm" --no-audit --no-fund \
    --ignore-scripts chinese-poetry@2.0.1
fi

if [ "$DO_PIP" = 1 ]; then
  step pip-chatterbot-corpus "$PYTHON" -m pip install -q chatterbot-corpus==1.3.3
  step pip-opencc "$PYTHON" -m pip install -q opencc==1.4.2
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "setup_sources.sh: could not install: ${failed[*]} (the corpus builds from the rest)" >&2
  exit 1
fi
echo "setup_sources.sh: all sources installed (npm cache: $SOURCES/npm)"
