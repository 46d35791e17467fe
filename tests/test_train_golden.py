"""Numerical regression: a fixed tiny run (tests/golden_run.py) must reproduce the numbers stored in
tests/golden/tiny_fineweb_edu.json, step by step. A refactor that changes what training computes (init, data
order, loss, LR schedule, accumulation, clipping, AdamW, validation) fails here with the first differing step.

Tolerances are for fp32 on other CPUs and library builds (summation order in BLAS kernels), far below what a
real change moves: a warm-up shifted by one step or an extra clip changes losses by 1e-3 or more within a few steps.
"""

import json
import math

import pytest

from golden_run import GOLDEN, SOURCE, TRAIN_ARGS, run

LOSS_ABS = 5e-5       # train and validation loss (values ~10; 50 float32 ulps)
GRAD_NORM_REL = 1e-4  # a norm magnifies last-bit differences more than the loss does
LR_REL = 1e-9         # the schedule is exact arithmetic on the step number


def _first_difference(got: list[dict], want: list[dict], tolerances: dict) -> str | None:
    if [r["step"] for r in got] != [r["step"] for r in want]:
        return f"logged steps differ: got {[r['step'] for r in got]}, stored {[r['step'] for r in want]}"
    for g, w in zip(got, want):
        for key, (kind, tol) in tolerances.items():
            ok = (math.isclose(g[key], w[key], rel_tol=tol, abs_tol=0) if kind == "rel"
                  else abs(g[key] - w[key]) <= tol)
            if not ok:
                return f"step {g['step']}: {key} {g[key]!r}, stored {w[key]!r} ({kind} tolerance {tol})"
    return None


@pytest.fixture(scope="module")
def golden_numbers(shared_data, tmp_path_factory):
    shared_data(str(SOURCE.relative_to(SOURCE.parents[1])))  # fails loudly under CI when ../shared is missing
    return run(tmp_path_factory.mktemp("golden"))


def test_the_stored_golden_run_is_this_run():
    stored = json.loads(GOLDEN.read_text())
    assert stored["train_args"] == TRAIN_ARGS, (
        "tests/golden_run.py's TRAIN_ARGS changed: regenerate with `python tests/golden_run.py --update`")
    assert len(stored["train"]) == 12 and [r["step"] for r in stored["val"]] == [0, 6, 12]


def test_training_reproduces_the_stored_numbers(golden_numbers):
    stored = json.loads(GOLDEN.read_text())
    problem = (_first_difference(golden_numbers["train"], stored["train"],
                                 {"lr": ("rel", LR_REL), "loss": ("abs", LOSS_ABS),
                                  "grad_norm": ("rel", GRAD_NORM_REL)})
               or _first_difference(golden_numbers["val"], stored["val"], {"val_loss": ("abs", LOSS_ABS)}))
    assert problem is None, (
        f"the golden run moved ({problem}). If the change was meant to move training's numbers, regenerate with "
        f"`python tests/golden_run.py --update` and say why in the commit; otherwise it is a regression.")


def test_the_comparison_catches_a_small_real_change(golden_numbers):
    """The check can fail: one loss off by 1e-3 (what a one-step LR shift does early on) is reported."""
    stored = json.loads(GOLDEN.read_text())
    nudged = [dict(r) for r in golden_numbers["train"]]
    nudged[4]["loss"] += 1e-3
    assert _first_difference(nudged, stored["train"], {"loss": ("abs", LOSS_ABS)}).startswith("step 5: loss")


def test_the_golden_run_trains_on_the_cpu_with_one_thread_and_restores_both(tmp_path, monkeypatch):
    """The stored numbers are fp32 CPU ones: on a machine with a GPU the run must not go to CUDA (other kernels,
    TF32), and what it sets for itself is put back for the tests after it."""
    import os

    import torch

    import data.prepare
    import golden_run
    import train

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    seen = {}

    def fake_train(argv):
        from accelerate import Accelerator

        seen["device"] = Accelerator().device.type  # what train.py's Accelerator gets
        seen["threads"] = torch.get_num_threads()
        out = argv[argv.index("--output_dir") + 1]
        os.makedirs(out)
        with open(os.path.join(out, "metrics.jsonl"), "w") as f:
            f.write('{"type": "train", "step": 1, "loss": 1.0, "lr": 0.1, "grad_norm": 1.0}\n')
        return 0

    monkeypatch.setattr(golden_run, "SOURCE", tmp_path)  # exists; prepare is not run
    monkeypatch.setattr(data.prepare, "prepare", lambda *a, **k: None)
    monkeypatch.setattr(train, "main", fake_train)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    threads = torch.get_num_threads()
    golden_run.run(tmp_path)
    assert seen == {"device": "cpu", "threads": 1}
    assert "ACCELERATE_USE_CPU" not in os.environ and torch.get_num_threads() == threads
