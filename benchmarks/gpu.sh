#!/usr/bin/env bash
# Everything this project measures on a GPU, as one command of about 6 minutes:
#
#   bash benchmarks/gpu.sh [OUT]        # OUT defaults to results/gpu
#
# 1. the machine: GPU name, driver, memory; Python, jax, flax, torch, CUDA and cuDNN
#    versions, XLA_FLAGS;
# 2. the length sweep of the linear recurrences (benchmarks/lengths.py: the training
#    step at T = 1,000 / 10,000 / 100,000, the associative scan against the sequential
#    loop and the LSTM at the same parameter count; issue 21). XLA's command buffers for
#    the while loop were measured at 16d93b0 (no help: results/gpu-h200) and dropped;
# 3. the benchmark (benchmarks/run.py): the tanh RNN, LSTM and GRU at small/medium/large,
#    rnnjax's default plan, JAX's own backward, unroll=1 and the persistent Pallas time
#    loop (rnnjax.persistent, loop="persistent": its gate checks the compiled kernel's
#    outputs and gradients against float64 PyTorch before it is timed), Flax, PyTorch
#    on cuDNN and jax.experimental.rnn's cuDNN LSTM, float32 with TF32 off in every
#    backend. (benchmarks/pallas_probe.py, the forward-only probe that came before the
#    library's kernel, ran at 16d93b0; it is no longer part of this script.)
# 4. the main job's smoke run (experiments/vanishing_gradients.py, tiny) on the GPU.
#
# It installs nothing: it runs the repository with the python3 given as $PYTHON (or on
# the PATH) whose jax sees the GPU. Each step has a time limit in seconds (LENGTHS_S,
# BENCH_S, SMOKE_S); the sweep and the benchmark save their JSON after every
# row, so a step cut short keeps what it measured. Writes OUT/log.txt,
# OUT/lengths/ and OUT/bench/.
set -u
out=${1:-results/gpu}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false # JAX and PyTorch share the card
log="$out/log.txt"

step() { echo "== $* ($(date -u +%H:%M:%S) UTC)" | tee -a "$log"; }

step "machine"
{
  git rev-parse HEAD 2>/dev/null && git status --short | head -20
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$py" - <<'EOF'
import os, sys, jax, flax, optax, torch
print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__,
      "optax", optax.__version__, "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version())
try:
    from importlib.metadata import version
    print("jax-cuda plugin", [version(p) for p in ("jax-cuda13-plugin", "jax-cuda12-plugin")
                              if __import__("importlib.util").util.find_spec(p.replace("-", "_"))])
except Exception as e:
    print("plugin version unknown:", e)
print(jax.devices(), "XLA_FLAGS", repr(os.environ.get("XLA_FLAGS", "")))
EOF
} >>"$log" 2>&1

step "length sweep (linear recurrences)"
timeout "${LENGTHS_S:-80}" "$py" benchmarks/lengths.py --cells rg_lru,min_gru --rounds 2 --out "$out/lengths" >>"$log" 2>&1
echo "lengths exit status $?" | tee -a "$log"
[ -f "$out/lengths/lengths.json" ] && "$py" benchmarks/lengths.py --report --out "$out/lengths" >>"$log" 2>&1

step "benchmark"
timeout "${BENCH_S:-230}" "$py" benchmarks/run.py \
  --cells rnn_tanh,lstm,gru --backends rnnjax,rnnjax-autodiff,rnnjax-unroll1,rnnjax-persistent,flax,torch,cudnn \
  --rounds "${ROUNDS:-5}" --min_sample "${MIN_SAMPLE:-0.03}" --no-sweep \
  --out "$out/bench" >>"$log" 2>&1
echo "benchmark exit status $?" | tee -a "$log"

step "main job, smoke run"
timeout "${SMOKE_S:-30}" "$py" experiments/vanishing_gradients.py --forget_train \
  --hidden_size 6 --lengths 8,16 --seeds 2 --batch_size 4 --sweep_len 10 \
  --train_lengths 10 --train_steps 4 --clip_steps 3 --eval_size 8 --scales 0.5,1.5 \
  --no-progress --out /tmp/rnnjax-smoke >>"$log" 2>&1
echo "smoke exit status $?" | tee -a "$log"
step "done"
grep -E "^(gate|small|medium|large|Wrote)|max \||  (rnn_tanh|lstm|gru) |Error|error" "$log" | tail -80
