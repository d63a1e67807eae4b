#!/usr/bin/env bash
# The GPU measurements behind bench/RESULTS.md's GPU section, in one prepared run (issue 18):
# training throughput/MFU vs transformers, torch.compile, AdamW fused vs foreach, FlexAttention
# vs SDPA, 32K long context with activation checkpointing, KV-cache generation vs transformers,
# FSDP2 at world size 1 vs plain, DCP timing. Steps run in priority order under one deadline
# (BUDGET seconds); each has its own timeout, and a step that fails does not stop the others.
#
#   OUT=/tmp/gpu BUDGET=500 bash bench/gpu_suite.sh             # python3 must see a CUDA torch
#   OUT=/tmp/gpu BUDGET=500 PART=rest bash bench/gpu_suite.sh   # only what the H200 session of
#                                                               # 2026-11-26 left unmeasured
# PART=first runs the rows already in RESULTS.md; PART=rest the missing ones; PART=all both.
set -u
OUT=${OUT:-/tmp/gpu}; BUDGET=${BUDGET:-500}; PY=${PY:-python3}; PART=${PART:-all}
mkdir -p "$OUT"; export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
LOG=$OUT/gpu.log; JSON=$OUT/train.jsonl; : >"$LOG"
step() {   # step <timeout> <title> <command...>
  local t=$1 title=$2; shift 2
  local left=$((BUDGET - SECONDS))
  if ((left < 20)); then echo "## SKIPPED (budget): $title" | tee -a "$LOG"; return; fi
  ((t > left)) && t=$left
  echo "## $title  [t=${SECONDS}s, timeout ${t}s]" | tee -a "$LOG"
  echo "\$ $*" >>"$LOG"
  local t0=$SECONDS
  timeout "$t" "$@" 2>&1 | grep -v -e "^W[0-9]" -e "UserWarning" -e "warnings.warn" | tee -a "$LOG"
  echo "## rc=${PIPESTATUS[0]} in $((SECONDS - t0))s" | tee -a "$LOG"
}
TT="$PY bench/train_throughput.py --json $JSON --steps 3 --warmup 2"

step 30 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c '
import torch, time
print(\"torch\", torch.__version__, torch.cuda.get_device_name())
a = torch.randn(8192, 8192, device=\"cuda\", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): a @ b
torch.cuda.synchronize(); print(f\"bf16 8192^3 matmul: {10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12:.0f} TFLOP/s\")'"
if [[ $PART == all || $PART == first ]]; then
step 100 "1B seq 2048, eager (flex compiled inside), all rows" $TT --preset large-1b --seq-len 2048 --batch 8
step 150 "1B seq 2048, torch.compile whole model" $TT --preset large-1b --seq-len 2048 --batch 8 --compile --rows fused,foreach_adam
step 90 "Index-1.9B shape, 32K tokens, document masks, activation checkpointing" \
  $PY bench/train_throughput.py --json "$JSON" --steps 2 --warmup 1 --preset index-1.9b --seq-len 32768 --batch 1 --ac --rows fused
step 120 "FSDP2 world size 1 vs plain (small-125m, 20 steps) + DCP timing (large-1b)" \
  $PY bench/fsdp_check.py --preset small-125m --seq-len 1024 --batch 8 --steps 20 --dcp-preset large-1b
step 45 "generate batch 1" $PY bench/generate_speed.py --preset small-125m --batch 1 --prompt-len 128 --new-tokens 128 --repeat 2 --device cuda
step 45 "generate batch 16" $PY bench/generate_speed.py --preset small-125m --batch 16 --prompt-len 128 --new-tokens 128 --repeat 2 --device cuda
step 50 "125M seq 2048" $TT --preset small-125m --seq-len 2048 --batch 16 --rows hf,causal_sdpa,packed,fused
fi
if [[ $PART == all || $PART == rest ]]; then
step 25 "DPO step-0 margin, bf16 reference vs fp32 reference (issue 17 item 8)" \
  $PY bench/dpo_step0.py --device cuda --preset small-125m
step 70 "350M seq 2048" $TT --preset medium-350m --seq-len 2048 --batch 8 --rows hf,causal_sdpa,fused
step 70 "1B seq 4096" $TT --preset large-1b --seq-len 4096 --batch 4 --rows hf,fused
step 70 "Index-1.9B shape seq 2048" $TT --preset index-1.9b --seq-len 2048 --batch 4 --rows hf,fused
step 150 "1B seq 2048, both compiled (transformers and lmforge)" \
  $TT --preset large-1b --seq-len 2048 --batch 8 --compile --compile-hf --rows hf,fused
step 60 "Index-1.9B shape, 32K tokens, 16K-token documents (what longctx selects), AC" \
  $PY bench/train_throughput.py --json "$JSON" --steps 2 --warmup 1 --preset index-1.9b --seq-len 32768 --batch 1 --ac --mean-doc 16384 --rows fused
step 90 "125M seq 2048, both compiled" $TT --preset small-125m --seq-len 2048 --batch 16 --compile --compile-hf --rows hf,fused
step 200 "DCP timing, large-1b" $PY -m torch.distributed.run --standalone --nproc_per_node=1 \
  bench/fsdp_check.py --dcp-only --dcp-preset large-1b --device cuda
fi
echo "## total ${SECONDS}s" | tee -a "$LOG"
