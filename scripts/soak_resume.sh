#!/usr/bin/env bash
# Kill -9 soak of pretraining resume (not a CI test: a few minutes on a CPU).
#   usage: scripts/soak_resume.sh [N=20] [--steps 300] [--ckpt-every 5] [--eval-every 25] [--seed 0] [--workdir DIR]
# Runs a small pretraining run (tiny preset, CPU) once straight through, and once killed with
# SIGKILL N times at random moments, resumed after each kill; prints the steps recomputed and
# whether per-step loss/LR/grad-norm/validation, final weights, optimizer and RNG state are
# bit-identical. Exit 0 when everything matches.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python}"
[ -x "$here/../.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && py="$here/../.venv/bin/python"
exec "$py" "$here/soak_resume.py" "$@"
