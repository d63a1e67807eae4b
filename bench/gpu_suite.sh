#!/usr/bin/env bash
# The GPU measurements behind bench/RESULTS.md's GPU section, in one prepared run (issues 18, 31):
# training throughput/MFU vs transformers (eager and compiled), torch.compile, AdamW fused vs
# foreach, Muon, FP8, FlexAttention vs SDPA, 32K long context with activation checkpointing,
# KV-cache generation vs transformers, FSDP2 at world size 1 vs plain, DCP timing. Steps run in
# priority order under one deadline (BUDGET seconds); each has its own timeout, prints its rows as
# they are measured, and a step that fails or times out does not stop the others.
#
#   OUT=/tmp/gpu BUDGET=470 bash bench/gpu_suite.sh                 # PART=rest: issue 31's rows
#   OUT=/tmp/gpu BUDGET=470 STEPS="125m-compiled dpo-step0" bash bench/gpu_suite.sh   # chosen steps
#   OUT=/tmp/gpu DRY=1 bash bench/gpu_suite.sh                      # CPU: every step at the tiny shape
# PART=first: the rows already in RESULTS.md (the H200 session of 2026-11-26); PART=rest (default):
# the rows that session left, in issue 31's priority order; PART=all: both. STEPS (ids below)
# overrides PART. DRY=1 runs each command on the CPU at the tiny preset (seq 128, batch 2), to catch
# a broken command before it costs device time. python3 must see a CUDA torch; torchao (for the fp8
# row) is installed from .whl/ when the machine lacks it (see bench/RESULTS.md, "GPU runs").
set -u
OUT=${OUT:-/tmp/gpu}; BUDGET=${BUDGET:-470}; PY=${PY:-python3}; PART=${PART:-rest}; DRY=${DRY:-0}
((DRY)) && BUDGET=100000   # a CPU check runs every step to its end
mkdir -p "$OUT"; export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
LOG=$OUT/gpu.log; JSON=$OUT/train.jsonl; : >"$LOG"
FIRST="device 1b-eager 1b-compile-rows index-32k fsdp gen-1 gen-16 125m-eager"
REST="device 1b-compiled index-2048 1b-4096 350m 125m-compiled 32k-longdocs fp8-1b fp8-index dpo-step0 trainer-arms dcp-1b"
case $PART in first) STEPS=${STEPS:-$FIRST} ;; rest) STEPS=${STEPS:-$REST} ;; all) STEPS=${STEPS:-$FIRST ${REST#device }} ;;
  *) echo "gpu_suite: PART=$PART: expected first, rest or all" >&2; exit 2 ;; esac
for id in $STEPS; do
  [[ " $FIRST $REST " == *" $id "* ]] || { echo "gpu_suite: STEPS: no step '$id' (known: $FIRST ${REST#device })" >&2; exit 2; }
done

dry() {   # CMD=(the same command at the tiny shape on the CPU)
  local prev=""; CMD=()
  for a in "$@"; do
    case $prev in
      --preset|--dcp-preset) a=tiny ;; --seq-len) a=128 ;; --batch) a=2 ;; --mean-doc) a=32 ;; --device) a=cpu ;;
    esac
    CMD+=("$a"); prev=$a
  done
}
step() {   # step <id> <timeout> <title> <command...>
  local id=$1 t=$2 title=$3; shift 3
  [[ " $STEPS " == *" $id "* ]] || return 0
  local left=$((BUDGET - SECONDS))
  if ((left < 20)); then echo "## SKIPPED (budget): $id: $title" | tee -a "$LOG"; return; fi
  ((t > left)) && t=$left
  echo "## $id: $title  [t=${SECONDS}s, timeout ${t}s]" | tee -a "$LOG"
  echo "\$ $*" >>"$LOG"
  local t0=$SECONDS
  if ((DRY)); then dry "$@"; t=600; export OMP_NUM_THREADS=1; else CMD=("$@"); fi
  timeout "$t" "${CMD[@]}" 2>&1 | grep -v -e "^W[0-9]" -e "UserWarning" -e "warnings.warn" | tee -a "$LOG"
  echo "## rc=${PIPESTATUS[0]} in $((SECONDS - t0))s" | tee -a "$LOG"
}
if ((!DRY)) && ! $PY -c "import torchao.float8" 2>/dev/null && compgen -G ".whl/torchao-*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/torchao-*.whl \
    && export PYTHONPATH=$PWD:/tmp/site && echo "## torchao installed from .whl" | tee -a "$LOG"
fi
TT="$PY bench/train_throughput.py --json $JSON --steps 3 --warmup 2"

if ((DRY)); then echo "## device: skipped (DRY)" | tee -a "$LOG"; else
step device 30 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c '
import torch, time
print(\"torch\", torch.__version__, torch.cuda.get_device_name())
a = torch.randn(8192, 8192, device=\"cuda\", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): a @ b
torch.cuda.synchronize(); print(f\"bf16 8192^3 matmul: {10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12:.0f} TFLOP/s\")'"
fi
# PART=first: what the H200 session measured
step 1b-eager 100 "1B seq 2048, eager (flex compiled inside), all rows" $TT --preset large-1b --seq-len 2048 --batch 8
step 1b-compile-rows 150 "1B seq 2048, torch.compile whole model" \
  $TT --preset large-1b --seq-len 2048 --batch 8 --compile --rows fused,foreach_adam
step index-32k 90 "Index-1.9B shape, 32K tokens, document masks, activation checkpointing" \
  $PY bench/train_throughput.py --json "$JSON" --steps 2 --warmup 1 --preset index-1.9b --seq-len 32768 --batch 1 --ac --rows fused
step fsdp 120 "FSDP2 world size 1 vs plain (small-125m, 20 steps) + DCP timing (large-1b)" \
  $PY bench/fsdp_check.py --preset small-125m --seq-len 1024 --batch 8 --steps 20 --dcp-preset large-1b --device cuda
step gen-1 45 "generate batch 1" $PY bench/generate_speed.py --preset small-125m --batch 1 --prompt-len 128 --new-tokens 128 --repeat 2 --device cuda
step gen-16 45 "generate batch 16" $PY bench/generate_speed.py --preset small-125m --batch 16 --prompt-len 128 --new-tokens 128 --repeat 2 --device cuda
step 125m-eager 50 "125M seq 2048" $TT --preset small-125m --seq-len 2048 --batch 16 --rows hf,causal_sdpa,packed,fused
# PART=rest: issue 31, in its order (the DCP step last: the slowest, and it did not finish in 120 s)
step 1b-compiled 240 "1B seq 2048 compiled (the H100 twin of 54.3%), transformers eager and compiled, Muon" \
  $TT --preset large-1b --seq-len 2048 --batch 8 --compile --rows fused,hf,hf_compiled,muon
step index-2048 120 "Index-1.9B shape seq 2048, compiled, vs transformers eager" \
  $TT --preset index-1.9b --seq-len 2048 --batch 4 --compile --rows fused,hf
step 1b-4096 110 "1B seq 4096, compiled, vs transformers eager" $TT --preset large-1b --seq-len 4096 --batch 4 --compile --rows fused,hf
step 350m 90 "350M seq 2048, compiled, vs transformers eager" $TT --preset medium-350m --seq-len 2048 --batch 8 --compile --rows fused,hf
step 125m-compiled 100 "125M seq 2048, both compiled" $TT --preset small-125m --seq-len 2048 --batch 16 --compile --rows fused,hf_compiled
step 32k-longdocs 60 "Index-1.9B shape, 32K tokens, 8K-24K-token documents (what longctx selects), AC" \
  $PY bench/train_throughput.py --json "$JSON" --steps 2 --warmup 1 --preset index-1.9b --seq-len 32768 --batch 1 --ac --mean-doc 16384 --rows fused
step fp8-1b 130 "FP8 vs bf16 at 1B seq 2048, compiled (converted layers printed)" \
  $TT --preset large-1b --seq-len 2048 --batch 8 --compile --rows fused,fp8
step fp8-index 130 "FP8 vs bf16 at the Index-1.9B shape seq 2048, compiled" \
  $TT --preset index-1.9b --seq-len 2048 --batch 4 --compile --rows fused,fp8
step dpo-step0 25 "DPO step-0 margin, bf16 reference vs fp32 reference (issue 17 item 8)" \
  $PY bench/dpo_step0.py --device cuda --preset small-125m
step trainer-arms 150 "the trainer itself on CUDA: plain bf16 vs compiled, fp8 (compiled) and Muon, 350M, 20 steps" \
  $PY bench/fsdp_check.py --preset medium-350m --seq-len 1024 --batch 8 --steps 20 --dcp-preset "" --device cuda \
  --arm compiled:train.compile=true --arm fp8:train.precision=fp8,train.compile=true --arm muon:train.optim.name=muon
step dcp-1b 200 "DCP timing, large-1b" $PY -m torch.distributed.run --standalone --nproc_per_node=1 \
  bench/fsdp_check.py --dcp-only --dcp-preset large-1b --device cuda
echo "## total ${SECONDS}s" | tee -a "$LOG"
