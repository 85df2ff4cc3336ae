"""experiments/hello.py runs, learns "o" after "hell", and prints the right intermediates."""

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_hello():
    spec = importlib.util.spec_from_file_location("hello", ROOT / "experiments" / "hello.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["hello"] = module
    spec.loader.exec_module(module)
    return module


def numpy_table(params, text, vocab):
    """Section 1's equations in float64 NumPy, from the same params."""
    w_x, w_h, b = (np.asarray(a, np.float64) for a in params["cell"])
    w_y, b_y = (np.asarray(a, np.float64) for a in params["out"])
    h = np.zeros(w_h.shape[0])
    rows = []
    for ch in text:
        x = np.eye(len(vocab))[vocab.index(ch)]
        xw, hw = x @ w_x, h @ w_h + b
        h = np.tanh(xw + hw)
        y = h @ w_y + b_y
        p = np.exp(y - y.max()) / np.exp(y - y.max()).sum()
        rows.append([xw, hw, h, y, p])
    return rows


def test_hello_prints_intermediates_matching_numpy_and_learns(tmp_path, capsys):
    hello = load_hello()
    summary = hello.main(["--out_dir", str(tmp_path), "--seed", "3"])
    out = capsys.readouterr().out

    _, params = hello.init(hello.Config(seed=3))
    want = numpy_table(params, "hell", hello.VOCAB)
    names = ["x W_x", "h W_h + b", "h_t", "y_t", "softmax(y_t)"]
    table_part = out.split("Next-letter probabilities before")[0]
    for step, ch in enumerate("hell"):
        block = table_part.split(f"step {step + 1}: input {ch!r}")[1]
        for k, name in enumerate(names):
            line = re.search(rf"^  {re.escape(name)}\s+\[(.*)\]$", block, re.M).group(1)
            printed = np.array([float(v) for v in line.split(",")])
            np.testing.assert_allclose(printed, want[step][k], atol=6e-4)

    assert summary["solved"] and summary["predicted"] == "ello"
    assert "Prediction after 'hell': 'o' (correct" in out
    assert min(np.asarray(summary["probs_after"])[range(4), [1, 2, 2, 3]]) >= 0.9
    assert (tmp_path / "summary.json").exists()
