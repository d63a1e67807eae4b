#!/usr/bin/env bash
# Kill -9 soaks of resume (not a CI test: minutes on a CPU).
#   scripts/soak_resume.sh [N=20] [--steps 300] [--ckpt-every 5] [--eval-every 25] [--seed 0] [--workdir DIR]
#     a small pretraining run (tiny preset, CPU) once straight through, and once killed with
#     SIGKILL N times at random moments, resumed after each kill; prints the steps recomputed and
#     whether per-step loss/LR/grad-norm/validation, final weights, optimizer and RNG state are
#     bit-identical (scripts/soak_resume.py).
#   scripts/soak_resume.sh --stage NAME [N=6] [--recipe recipes/tiny.yaml] [--seed 0] [--workdir DIR]
#     any stage of a recipe's smoke run (pretrain, grow, grown, longctx, sftgrid, sft, dpo, selfknow,
#     or a data stage), `--stage all` every training stage in turn, `--stage recipe` the whole
#     `lmforge run RECIPE --smoke`: killed during start-up, during checkpoint/file writes and at random
#     moments, resumed, and compared with a straight run (scripts/soak_recipe.py).
# Exit 0 when everything matches.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python}"
[ -x "$here/../.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && py="$here/../.venv/bin/python"
for arg in "$@"; do
  [ "$arg" = "--stage" ] && exec "$py" "$here/soak_recipe.py" "$@"
done
exec "$py" "$here/soak_resume.py" "$@"
