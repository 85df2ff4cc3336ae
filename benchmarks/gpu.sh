#!/usr/bin/env bash
# Everything this project checks and measures on a GPU, as one command:
#
#   bash benchmarks/gpu.sh [OUT]        # OUT defaults to results/gpu
#
# 1. the machine: GPU name, driver, memory; Python, jax, flax, torch and CUDA versions;
# 2. the benchmark (benchmarks/run.py) with the GPU peers (PyTorch on cuDNN,
#    jax.experimental.rnn's cuDNN LSTM) and rnnjax's variants (JAX's backward, remat,
#    unroll=8), in float32 with TF32 off in every backend;
# 3. where the small LSTM's step time goes (benchmarks/profile_step.py: the kernels of
#    rnnjax's inference and training step, and with unroll=8);
# 4. the main job's smoke run (experiments/vanishing_gradients.py, tiny) on the GPU;
# 5. the tests of the driver, its fast paths and the benchmark gate, on the GPU.
#
# It installs nothing: it runs the repository with the python3 given as $PYTHON (or on
# the PATH) whose jax sees the GPU. Writes at most 11 files: OUT/log.txt (steps 1-4),
# OUT/pytest.log, OUT/bench/ (benchmark.json, .md, summary.md, two plots) and
# OUT/profile-small-lstm-{infer,train}/ (profile.json, profile.md). Each step has a
# time limit (seconds: BENCH_S, PROFILE_S per mode, SMOKE_S, TEST_S); the benchmark
# saves its JSON after every cell, so a step cut short keeps what it measured.
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
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$py" - <<'EOF'
import sys, jax, flax, optax, torch
print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__,
      "optax", optax.__version__, "torch", torch.__version__, "cuda", torch.version.cuda)
print(jax.devices())
EOF
} >>"$log" 2>&1

step "benchmark"
timeout "${BENCH_S:-480}" "$py" benchmarks/run.py \
  --backends rnnjax,rnnjax-autodiff,rnnjax-remat,rnnjax-unroll,flax,equinox,torch,cudnn \
  --rounds "${ROUNDS:-8}" --min_sample "${MIN_SAMPLE:-0.05}" \
  --sweep_lengths 1000,10000 --out "$out/bench" >>"$log" 2>&1
echo "benchmark exit status $?" | tee -a "$log"

step "where the small LSTM's step time goes"
for mode in infer train; do
  timeout "${PROFILE_S:-60}" "$py" benchmarks/profile_step.py --config small --cell lstm \
    --mode "$mode" --backends rnnjax,rnnjax-unroll --calls 3 \
    --out "$out/profile-small-lstm-$mode" >>"$log" 2>&1
  echo "profile $mode exit status $?" | tee -a "$log"
done

step "main job, smoke run"
timeout "${SMOKE_S:-180}" "$py" experiments/vanishing_gradients.py --forget_train \
  --hidden_size 6 --lengths 8,16 --seeds 2 --batch_size 4 --sweep_len 10 \
  --train_lengths 10 --train_steps 4 --clip_steps 3 --eval_size 8 --scales 0.5,1.5 \
  --no-progress --out /tmp/rnnjax-smoke >>"$log" 2>&1
echo "smoke exit status $?" | tee -a "$log"

step "tests"
timeout "${TEST_S:-150}" "$py" -m pytest -q -p no:cacheprovider -n 4 tests/test_scan.py \
  tests/test_fused.py tests/test_remat.py tests/test_benchmark.py >"$out/pytest.log" 2>&1
echo "tests exit status $?" | tee -a "$log"
tail -3 "$out/pytest.log"
grep -E "^(gate|small|medium|large|sweep|matmul|Wrote)|Error|error" "$log" | tail -80
