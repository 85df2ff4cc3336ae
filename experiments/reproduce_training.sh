#!/usr/bin/env bash
# The training results of the README (issue 3), one command each, then the table.
# About 80 + 35 + 44 minutes on a 2-core CPU; OUT=... (and LIN=..., FAM=...) to write elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/results}
run() { "$PY" experiments/train.py --out "$OUT" --no-progress "$@"; }

for T in 100 200; do
  for cell in rnn_tanh lstm gru; do
    run --task adding --cell "$cell" --seq_len "$T" --steps 2500 --schedule cosine
  done
done
for cell in rnn_tanh lstm gru; do
  run --task copy --cell "$cell" --seq_len 50 --steps 2500 --schedule cosine
done
for cell in rnn_tanh lstm gru; do
  run --task digits --cell "$cell" --steps 1500 --schedule cosine --name "digits-$cell"
  run --task digits --cell "$cell" --steps 1500 --schedule cosine --permuted --name "digits_permuted-$cell"
done
for cell in rnn_tanh lstm gru; do
  run --task charlm --cell "$cell" --seq_len 100 --hidden_size 128 --batch_size 32 \
      --learning_rate 3e-3 --steps 2000 --schedule cosine --eval_size 256 --name "charlm-$cell"
done
"$PY" experiments/train_report.py "$OUT"/* > results/training.md
cat results/training.md

# The linear recurrences (issue 21) where the LSTM above struggled or slowed: the
# copy task at T = 50 and the adding problem at T = 200. About 35 minutes here.
LIN=${LIN:-runs/linear}
for cell in lru rg_lru min_gru min_lstm; do
  "$PY" experiments/train.py --out "$LIN" --no-progress --task adding --cell "$cell" --seq_len 200 --steps 2500 --schedule cosine
  "$PY" experiments/train.py --out "$LIN" --no-progress --task copy --cell "$cell" --seq_len 50 --steps 2500 --schedule cosine
done
"$PY" experiments/train_report.py "$LIN"/* > results/training_linear.md
cat results/training_linear.md

# Issue 20's nonlinear families (and the relu RNN) at the adding problem's T = 200, the
# same steps, schedule and 3 seeds as the rows above, cheapest first.
FAM=${FAM:-runs/families}
for cell in indrnn antisymmetric antisymmetric_gated rnn_relu exprnn cornn mgu lem ln_gru ln_lstm; do
  "$PY" experiments/train.py --out "$FAM" --no-progress --task adding --cell "$cell" --seq_len 200 --steps 2500 --schedule cosine
done
"$PY" experiments/train_report.py "$FAM"/* > results/training_families.md
cat results/training_families.md
