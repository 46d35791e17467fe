"""FSDP2 (configs/accelerate/fsdp2.yaml) on two CPU processes, through Accelerate's real FSDP2 preparation
(tests/fsdp_cpu_train.py explains the one switch it needs on CPU), compared with one process on the same global
batch (the tiny setup of test_train_runs):

- evaluation with ranks holding unequal numbers of batches (every forward is collective under FSDP: the rank
  with fewer used to wait forever), and HellaSwag right after a training step (it used to bypass the root
  module's weight gather);
- the same losses as one process; the checkpoint's model folder is a plain one (our auto_map and code, the tied
  weight once) that loads with trust_remote_code;
- an FSDP run resumes from a one-process checkpoint (position-keyed optimizer state) and one process from an
  FSDP checkpoint, both landing on the one-process run's losses.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_train_runs import REPO, TIMEOUT, _args, _env, _run, setup  # noqa: F401  (setup is a fixture)
from training.metrics import read_metrics

# Evaluation batches of 7 rows. 15 validation windows: rank 0 holds 8 (2 batches), rank 1 holds 7 (1 batch);
# HellaSwag's 48 rows make 7 batches (4 and 3). HellaSwag at step 2 comes straight after a training step
# (validation runs at 0, 4 and 8).
EVAL_ARGS = ["--val_batch_size", "7", "--val_tokens", "480", "--hellaswag_every", "2", "--eval_every", "4",
             "--save_every", "4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_fsdp(args, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs/accelerate/fsdp2.yaml"), "--num_processes", "2", "--main_process_port",
           str(_free_port()), str(REPO / "tests/fsdp_cpu_train.py"), *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def _losses(out: Path, kind: str = "train", key: str = "loss") -> dict[int, float]:
    return {row["step"]: row[key] for row in read_metrics(out / "metrics.jsonl", kind)}


@pytest.fixture(scope="module")
def one_process(setup, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("fsdp") / "one"
    proc = _run(_args(setup, out, *EVAL_ARGS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def fsdp(setup, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("fsdp") / "two"
    proc = _run_fsdp(_args(setup, out, *EVAL_ARGS))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "world size 2 (FSDP)" in proc.stdout + proc.stderr
    return out


def test_fsdp_evaluates_unequal_shares_and_matches_one_process(one_process, fsdp):
    for kind, key in (("train", "loss"), ("val", "val_loss"), ("hellaswag", "acc_norm")):
        ours, reference = _losses(fsdp, kind, key), _losses(one_process, kind, key)
        assert ours.keys() == reference.keys() and ours, kind
        for step in reference:
            assert ours[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-6), (kind, step)
    # the filler batches of the rank with fewer windows count no tokens
    assert [r["val_tokens"] for r in read_metrics(fsdp / "metrics.jsonl", "val")] == [15 * 32] * 3


def test_fsdp_checkpoint_is_a_plain_model_folder_that_loads_with_remote_code(one_process, fsdp, tmp_path):
    model_dir = fsdp / "checkpoints" / "step_00000008" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_gpt2repro.GPT2ReproForCausalLM"
    assert sorted(p.name for p in model_dir.glob("*.py")) == ["configuration_gpt2repro.py", "modeling_gpt2repro.py"]
    single = one_process / "checkpoints" / "step_00000008" / "model" / "model.safetensors"
    assert (model_dir / "model.safetensors").stat().st_size == single.stat().st_size  # the tied weight once

    script = ("import sys, torch; from transformers import AutoModelForCausalLM; "
              "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True); "
              "print(type(m).__module__, m.lm_head.weight is m.transformer.wte.weight)")
    env = {**_env(), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", script, str(model_dir)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    module, tied = proc.stdout.strip().splitlines()[-1].split()
    assert module.startswith("transformers_modules") and tied == "True"  # the folder's own code, weights tied


def test_resume_across_fsdp_and_one_process_both_ways(setup, one_process, fsdp, tmp_path):  # noqa: F811
    reference = _losses(one_process)
    step4 = "checkpoints/step_00000004"

    fsdp_from_one = tmp_path / "fsdp_from_one"
    proc = _run_fsdp(_args(setup, fsdp_from_one, *EVAL_ARGS, "--resume", str(one_process / step4)))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    one_from_fsdp = tmp_path / "one_from_fsdp"
    proc = _run(_args(setup, one_from_fsdp, *EVAL_ARGS, "--resume", str(fsdp / step4)))
    assert proc.returncode == 0, proc.stderr[-3000:]

    for out in (fsdp_from_one, one_from_fsdp):
        resumed = _losses(out)
        assert sorted(resumed) == [5, 6, 7, 8], out.name
        for step, loss in resumed.items():
            assert loss == pytest.approx(reference[step], rel=1e-4), (out.name, step)


def test_fsdp_with_compile_trains_and_evaluates_through_the_sharded_root(setup, one_process, tmp_path):  # noqa: F811
    """Accelerate wrapped the whole model in torch.compile before fully_shard: the evaluation, which runs the
    model itself, then called a module that is not the FSDP root and failed at validation step 0. Now the
    blocks are compiled in place (regional compilation) and the root stays the model."""
    from training import fsdp

    out = tmp_path / "compiled"
    # two ranks compiling on 2 cores took 122 s on a slow machine (2026-12-02): twice the usual limit, for slower ones
    proc = _run_fsdp(_args(setup, out, *EVAL_ARGS, "--compile", "--max_steps", "2"), timeout=2 * TIMEOUT)
    if fsdp.compile_problem():  # an older torch than CI's (2.9): refused with the message (ranks exit 2, the
        # launcher then 1)
        assert proc.returncode != 0 and "compile under FSDP2 needs a newer torch" in proc.stderr, proc.stderr[-3000:]
        return
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert sorted(_losses(out)) == [1, 2]
    for kind, key in (("train", "loss"), ("val", "val_loss"), ("hellaswag", "acc_norm")):
        ours, ref = _losses(out, kind, key), _losses(one_process, kind, key)
        common = sorted(ours.keys() & ref.keys())  # validation: steps 0 and 2 here, 0, 4 and 8 there
        assert common and all(ours[step] == pytest.approx(ref[step], rel=1e-3) for step in common), (kind, ours)


def test_fsdp_bf16_reports_the_loss_as_computed_not_rounded_to_bf16(setup, tmp_path):  # noqa: F811
    """Accelerate's FSDP2 policy for bf16 also reduces gradients and returns outputs in bf16: each rank's loss came
    back rounded to a multiple of 1/16 (bf16 near 10), their mean a multiple of 1/32. Ours reduces in fp32 and
    leaves outputs alone."""
    out = tmp_path / "bf16"
    proc = _run_fsdp(_args(setup, out, "--mixed_precision", "bf16", "--max_steps", "2", "--eval_every", "0",
                           "--hellaswag_every", "0", "--sample_every", "0", "--no_eval_at_end"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    losses = list(_losses(out).values())
    assert len(losses) == 2
    assert all(loss * 64 != round(loss * 64) for loss in losses), losses


def test_fp32_gradient_reduction_only_for_fsdp2_launches(monkeypatch):
    """Our MixedPrecisionPolicy is an FSDP2 type: passing it to an FSDP1 launch made Accelerate refuse to start."""
    import torch

    from training.fsdp import plugin_for_launch

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    assert plugin_for_launch("bf16") is None
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert plugin_for_launch("no") is None
    policy = plugin_for_launch("bf16").mixed_precision_policy
    assert (policy.param_dtype, policy.reduce_dtype, policy.output_dtype) == (torch.bfloat16, torch.float32, None)


def test_the_checkpoint_twin_keeps_the_models_generation_settings():
    """The FSDP checkpoint is saved through a weightless twin built from the config: it dropped generation
    settings the model carried (an init_from export's top-k sampling)."""
    from model_helpers import tiny_model
    from training.fsdp import plain_twin

    model = tiny_model()
    model.generation_config.do_sample, model.generation_config.top_k = True, 7
    twin = plain_twin(model)
    assert type(twin) is type(model) and twin.device.type == "meta"
    assert (twin.generation_config.do_sample, twin.generation_config.top_k) == (True, 7)


def test_the_banner_says_when_a_launchers_fsdp_config_is_not_applied(monkeypatch):
    """On CPU processes Accelerate runs an FSDP launch config as DDP: the banner says so instead of looking like
    an ordinary DDP run."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from training.banner import _strategy

    def accelerator(kind, n):
        return SimpleNamespace(distributed_type=kind, num_processes=n, device=torch.device("cpu"))

    assert _strategy(accelerator(DistributedType.MULTI_CPU, 2)) == " (DDP)"
    assert _strategy(accelerator(DistributedType.NO, 1)) == ""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert _strategy(accelerator(DistributedType.MULTI_CPU, 2)) == (
        " (DDP: the launcher's FSDP config is not applied on CPU)")
    assert _strategy(accelerator(DistributedType.FSDP, 2)) == " (FSDP)"


def test_compile_under_fsdp2_on_a_torch_without_the_dynamo_option_accelerate_sets_is_refused(monkeypatch):
    """torch 2.9 lacks the dynamo option Accelerate's per-block compile sets, so prepare() raised an AttributeError
    on every rank; the run is refused up front with what to do instead."""
    import types

    from training import fsdp

    monkeypatch.setattr(torch._dynamo, "config", types.SimpleNamespace())  # as torch 2.9's lacks it
    problem = fsdp.compile_problem()
    assert problem.startswith(f"compile under FSDP2 needs a newer torch than {torch.__version__}")
    assert "--compile false" in problem
