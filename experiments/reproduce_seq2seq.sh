#!/usr/bin/env bash
# The Seq2Seq results of the README (issue 4), one command each, then the report.
# About 45 minutes on a 2-core CPU; OUT=... to write elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/seq2seq}
run() { "$PY" experiments/seq2seq.py --out "$OUT" --no-progress "$@"; }

# Bidirectional LSTM-128 encoder, LSTM-128 decoder with Bahdanau attention (the defaults).
run --task addition --digits 3 --steps 5000 --seeds 3
run --task dates --steps 1000 --seeds 2
# The bottleneck of one context vector: the same encoder and decoder, with and without
# attention, against the length of the sequence to reverse.
for T in 10 20 40; do
  for attention in none bahdanau; do
    run --task reversal --seq_len "$T" --attention "$attention" --steps 2000
  done
done
"$PY" experiments/seq2seq_report.py "$OUT"/* --out results/seq2seq
