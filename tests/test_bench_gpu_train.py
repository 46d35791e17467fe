"""bench/bench_gpu_train.py runs end to end on CPU with a tiny model, so the GPU measurement (issue 7) is one
command away when a GPU is lent. No timing is asserted: only that every part ran and reported."""

import json
import random
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import bench_gpu_train  # noqa: E402
from bench.nanogpt_reference import RefConfig, RefGPT, SequentialLoader  # noqa: E402


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from data.prepare import prepare

    root = tmp_path_factory.mktemp("bench_gpu")
    rng = random.Random(0)
    words = "a model learns to predict the next token from the ones before it as training goes on".split()
    src = root / "docs.jsonl"
    with open(src, "w") as f:
        for _ in range(300):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(30, 90)))}) + "\n")
    prepare(str(src), root / "data", val_tokens=4096, shard_tokens=1 << 20, num_proc=1, progress=False)
    hellaswag = root / "hellaswag.jsonl"
    with open(hellaswag, "w") as f:
        for i in range(8):
            f.write(json.dumps({"ind": i, "activity_label": "Learning", "ctx_a": f"the model {i} reads.",
                                "ctx_b": "then it", "ctx": f"the model {i} reads. then it", "split": "val",
                                "split_type": "indomain", "label": i % 4, "source_id": f"s{i}",
                                "endings": ["learns.", "predicts the next token.", "goes on.", "reads."]}) + "\n")
    return root / "data", hellaswag


def test_windows_exclude_warmup_and_use_wall_clock_between_rows():
    stamps = [(1, 10.0), (2, 11.0), (3, 11.5), (4, 12.0), (5, 12.5), (6, 13.5), (7, 14.0)]
    # warmup 2: windows of 2 steps end at steps 4 and 6 (the window starting at 6 would need step 8)
    assert bench_gpu_train.windows(stamps, 100, warmup=2, window=2) == [200 / 1.0, 200 / 1.5]


def test_reference_model_has_gpt2_shapes_and_a_sane_first_loss():
    torch.manual_seed(0)
    model = RefGPT(RefConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50304))
    assert model.head.weight is model.tok_emb.weight
    x = torch.randint(0, 50257, (2, 16))
    logits, loss = model(x, x)
    assert logits.shape == (2, 16, 50304)
    assert abs(loss.item() - torch.log(torch.tensor(50304.0)).item()) < 0.5  # ~uniform at init


def test_sequential_loader_is_build_nanogpt_order():
    import numpy as np

    loader = SequentialLoader([np.arange(10, dtype=np.uint16), np.arange(10, 20, dtype=np.uint16)], B=2, T=3)
    x, y = loader.next_batch()
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]] and y.tolist() == [[1, 2, 3], [4, 5, 6]]
    x, _ = loader.next_batch()
    assert x.tolist() == [[6, 7, 8], [9, 10, 11]]  # across the shard boundary, no gap


def test_tiny_cpu_run_reports_ours_reference_and_eval_costs(tiny_data, tmp_path):
    data, hellaswag = tiny_data
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = bench_gpu_train.main(["--tiny", "--data", str(data), "--hellaswag", str(hellaswag),
                                       "--val-tokens", "2048", "--warmup", "1", "--window", "2", "--windows", "2",
                                       "--variant", "loss_chunk_tokens=50", "--json", str(tmp_path / "result.json")])
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)  # train() ran in this process: leave no Accelerator behind
        GradientState._reset_state()
    assert json.loads((tmp_path / "result.json").read_text()) == result
    variant = "ours[loss_chunk_tokens=50]"
    assert list(result["runs"]) == ["ours", "reference", variant]
    stages = result["elapsed_s"]  # when each stage ended, in the order they ran
    assert list(stages) == ["peak", "ours", "reference", "evals", variant]
    assert list(stages.values()) == sorted(stages.values())
    for name in ("ours", variant, "reference"):
        run = result["runs"][name]
        assert run["tok_per_s"] > 0 and len(run["tok_per_s_windows"]) == 2 and run["mfu"] > 0
    assert result["ours_over_reference"] == result["runs"]["ours"]["over_reference"] > 0
    assert result["runs"][variant]["over_reference"] > 0
    # the variant really ran the same training with the other loss: same data and seed, same final loss
    assert result["runs"][variant]["final_loss"] == pytest.approx(result["runs"]["ours"]["final_loss"], rel=1e-4)
    assert result["setup"]["tokens_per_step"] == 512 and result["setup"]["grad_accum"] == 2
    evals = result["evals"]
    assert evals["val_tokens"] == 2048 and evals["hellaswag_examples"] == 8
    for name in ("val_loss_s", "hellaswag_s", "samples_s"):
        assert set(evals[name]) == {"first", "steady"}


def test_variants_past_the_deadline_are_not_started_and_a_failing_stage_costs_no_other(tiny_data, tmp_path,
                                                                                      monkeypatch):
    """A device's time limit: no variant starts past --deadline-s (the JSON says so); a stage that fails (here the
    reference) is recorded and the rest still run."""
    data, _ = tiny_data
    from accelerate.state import AcceleratorState, GradientState

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(bench_gpu_train, "run_reference", broken)
    try:
        result = bench_gpu_train.main(["--tiny", "--data", str(data), "--warmup", "1", "--window", "1",
                                       "--windows", "1", "--deadline-s", "0", "--variant", "loss_chunk_tokens=50",
                                       "--json", str(tmp_path / "result.json")])
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert result["runs"]["reference"] == {"error": "RuntimeError: CUDA error: an illegal memory access was "
                                                    "encountered"}
    assert result["runs"]["ours[loss_chunk_tokens=50]"] == {"skipped": "not started: past --deadline-s 0"}
    assert result["runs"]["ours"]["tok_per_s"] > 0 and "ours_over_reference" not in result
    assert json.loads((tmp_path / "result.json").read_text()) == result
    assert not list(tmp_path.glob("*.tmp"))


def test_profile_step_runs_every_variant_on_a_tiny_model(monkeypatch):
    """bench/gpu/profile_step.py (the per-kernel GPU comparison) stays runnable: tiny CPU smoke run."""
    from accelerate.state import AcceleratorState, GradientState

    from bench.gpu import profile_step

    monkeypatch.setattr(sys, "argv", ["profile_step.py", "--tiny", "--steps", "1"])
    try:
        results = profile_step.main()
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        torch._dynamo.reset()
    assert set(results) == {"ours", "ours, logits returned", "ours, chunked loss", "reference"}
    assert all(v > 0 for v in results.values())


def test_variant_parsing_refuses_what_is_not_key_value():
    assert bench_gpu_train.parse_variant("loss_chunk_tokens=8192,compile_mode=default") == {
        "loss_chunk_tokens": "8192", "compile_mode": "default"}
    for bad in ("", "loss_chunk_tokens", "=3"):
        with pytest.raises(SystemExit, match="KEY=VALUE"):
            bench_gpu_train.parse_variant(bad)


def test_inductor_keys_of_a_variant_are_typed_checked_and_scoped_to_the_run():
    import torch._inductor.config as inductor_config

    assert bench_gpu_train.split_variant("loss_chunk_tokens=64,inductor.coordinate_descent_tuning=True") == (
        {"loss_chunk_tokens": "64"}, {"coordinate_descent_tuning": True})
    assert bench_gpu_train.split_variant("inductor.triton.cudagraphs=0")[1] == {"triton.cudagraphs": False}
    for bad, message in (("inductor.no_such_setting=1", "has no setting 'no_such_setting'"),
                         ("inductor.coordinate_descent_tuning=yes", "takes a value like"),
                         ("inductor.coordinate_descent_search_radius=wide", "takes a value like")):
        with pytest.raises(SystemExit, match=message):
            bench_gpu_train.split_variant(bad)
    before = inductor_config.coordinate_descent_tuning
    with bench_gpu_train.inductor_patched({"coordinate_descent_tuning": not before}):
        assert inductor_config.coordinate_descent_tuning is (not before)
    assert inductor_config.coordinate_descent_tuning is before


def test_a_run_cut_short_keeps_what_it_measured(tiny_data, tmp_path, monkeypatch):
    """The JSON is written after every stage: when a later stage dies (as under a device time limit), the
    throughput already measured is on disk."""
    from accelerate.state import AcceleratorState, GradientState

    data, hellaswag = tiny_data

    def evals_die(*args, **kwargs):
        raise KeyboardInterrupt("time limit")

    monkeypatch.setattr(bench_gpu_train, "run_evals", evals_die)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(KeyboardInterrupt):
            bench_gpu_train.main(["--tiny", "--data", str(data), "--hellaswag", str(hellaswag), "--warmup", "1",
                                  "--window", "1", "--windows", "2", "--json", str(tmp_path / "partial.json")])
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    partial = json.loads((tmp_path / "partial.json").read_text())
    assert set(partial["runs"]) == {"ours", "reference"} and "evals" not in partial
    assert partial["ours_over_reference"] > 0 and partial["versions"]["torch"] == torch.__version__


def test_a_bad_variant_is_refused_before_anything_runs(tiny_data, monkeypatch):
    data, _ = tiny_data
    monkeypatch.setattr(bench_gpu_train, "matmul_peak", lambda device: pytest.fail("measured before checking"))
    for variant, message in (("loss_chunk=16384", "unknown command-line arguments"),
                             ("loss_chunk_tokens=abc", "loss_chunk_tokens"),
                             ("inductor.coordinate_descent_tuning=maybe", "takes a value like")):
        with pytest.raises(SystemExit, match=message):
            bench_gpu_train.main(["--tiny", "--data", str(data), "--variant", variant])
    with pytest.raises(SystemExit, match="each variant once"):
        bench_gpu_train.main(["--tiny", "--data", str(data), "--variant", "seed=1", "--variant", "seed=1"])
