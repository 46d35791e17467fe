"""The run config: precedence defaults < YAML < CLI, unknown keys rejected, every error reported at once, and a
table of bad configs that each get their message, exit non-zero and write nothing."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import train
from training.run_config import (ConfigError, RunConfig, grad_accum_steps, load_run_config, save_run_config,
                                 validate)

REPO = Path(__file__).resolve().parents[1]


def _fake_data_dir(tmp_path: Path) -> Path:
    """Enough for config validation (a folder with manifest.json); the loop's data checks come later."""
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"format": "gpt2repro-tokens"}))
    return d


def test_precedence_defaults_yaml_cli(tmp_path):
    data = _fake_data_dir(tmp_path)
    preset = tmp_path / "p.yaml"
    # YAML 1.1 reads 6e-4 as a string: it must still arrive as a float
    preset.write_text(f"data_dir: {data}\nmax_steps: 10\nmax_lr: 6e-4\nmicro_batch_size: 8\ncompile: true\nwarmup_steps: 5\n")
    cfg = load_run_config(["--config", str(preset), "--max_steps", "20", "--compile", "false", "--no_tf32"])
    assert cfg.max_steps == 20  # CLI beats YAML
    assert cfg.max_lr == 6e-4 and isinstance(cfg.max_lr, float)  # YAML beats default (1e-3 is not the default)
    assert cfg.micro_batch_size == 8
    assert cfg.compile is False and cfg.tf32 is False
    assert cfg.seq_len == RunConfig().seq_len  # untouched default
    assert cfg.config == str(preset)


def test_saved_config_reloads_identically(tmp_path):
    data = _fake_data_dir(tmp_path)
    cfg = load_run_config(["--data_dir", str(data), "--max_steps", "7", "--lr_decay_steps", "5", "--warmup_steps", "2"])
    saved = tmp_path / "run_config.yaml"
    save_run_config(cfg, saved)  # what train.py writes into the run folder: reusable as a preset
    again = load_run_config(["--config", str(saved)])
    assert {**again.to_dict(), "config": None} == cfg.to_dict()


def test_a_run_config_write_that_fails_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    """Each session rewrites the run folder's run_config.yaml (resumes and exports read it): a full disk mid-write
    once left it truncated; now the old file stays as it was and no temporary file is left."""
    import data.shards

    data_dir = _fake_data_dir(tmp_path)
    first = load_run_config(["--data_dir", str(data_dir), "--max_steps", "7", "--warmup_steps", "2"])
    saved = tmp_path / "run" / "run_config.yaml"
    saved.parent.mkdir()
    save_run_config(first, saved)
    before = saved.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.shards.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_run_config(dataclasses.replace(first, max_steps=9), saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["run_config.yaml"]


def test_recipe_preset_numbers(tmp_path):
    """The 124M preset is build-nanogpt's recipe; 524,288 tokens/step splits into accumulation exactly."""
    data = _fake_data_dir(tmp_path)
    cfg = load_run_config(["--config", str(REPO / "configs/gpt2_124m_fineweb_edu.yaml"), "--data_dir", str(data)])
    assert (cfg.total_batch_size, cfg.micro_batch_size, cfg.seq_len) == (524288, 64, 1024)
    assert (cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps) == (6e-4, 6e-5, 715, 19073)
    assert (cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay, cfg.grad_clip) == (0.9, 0.95, 1e-8, 0.1, 1.0)
    assert (cfg.mixed_precision, cfg.tf32, cfg.compile, cfg.val_tokens) == ("bf16", True, True, 10485760)
    assert [grad_accum_steps(cfg, w) for w in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert validate(cfg, world_size=8) == []
    assert any("divisible" in e for e in validate(cfg, world_size=3))  # 524288 / (64*1024*3) is not whole
    demo = load_run_config(["--config", str(REPO / "configs/demo.yaml"), "--data_dir", str(data)])
    assert validate(demo, world_size=1) == []


def _launch_args(accelerate_config: Path) -> list[str]:
    """The train.py arguments of the launch command in an accelerate config's header comment."""
    comment = " ".join(line.lstrip("# ").rstrip("\\ ") for line in accelerate_config.read_text().splitlines()
                       if line.startswith("#"))
    assert "train.py " in comment, f"{accelerate_config.name}: no launch command in its comment"
    return comment.split("train.py ", 1)[1].split()


@pytest.mark.parametrize("name", ["multi_gpu", "multi_node", "fsdp2"])
def test_each_accelerate_configs_launch_line_starts_the_recipe(tmp_path, name):
    """The command in each configs/accelerate/*.yaml, at its num_processes, passes the batch checks: with 2 x 8
    GPUs the preset's micro batch 64 made 1,048,576 tokens per step, so multi_node.yaml's command refused to start."""
    import yaml

    path = REPO / "configs/accelerate" / f"{name}.yaml"
    world = yaml.safe_load(path.read_text())["num_processes"]
    args = _launch_args(path)
    assert "..." not in args, f"{path.name}: its launch command must be complete, got {args}"
    cfg = load_run_config(args + ["--data_dir", str(_fake_data_dir(tmp_path)), "--output_dir", str(tmp_path / "r")])
    assert validate(cfg, world_size=world) == []
    assert grad_accum_steps(cfg, world) * cfg.micro_batch_size * cfg.seq_len * world == 524288


def test_a_batch_that_does_not_split_over_the_world_size_names_the_micro_batch_that_does(tmp_path):
    cfg = load_run_config(["--config", str(REPO / "configs/gpt2_124m_fineweb_edu.yaml"),
                           "--data_dir", str(_fake_data_dir(tmp_path))])
    (sixteen,) = validate(cfg, world_size=16)
    assert "use --micro_batch_size 32 (grad_accum 1; total_batch_size stays 524,288)" in sixteen
    (six,) = validate(cfg, world_size=6)
    assert "no micro_batch_size fits, as its 512 sequences per step cannot be split evenly over 6 processes" in six


# (name, YAML preset text or None, extra CLI args, expected fragment of the message)
BAD_CONFIGS = [
    ("unknown yaml key", "lerning_rate: 0.1\n", [], "unknown key 'lerning_rate'"),
    ("near-miss yaml key", "n_layers: 6\n", [], "; did you mean n_layer? (see"),
    ("non-string yaml key", "on: true\n", [], "unknown key True in "),
    ("unknown cli flag", None, ["--lerning_rate", "0.1"], "unknown command-line arguments"),
    ("near-miss cli flag", None, ["--max_step", "10"], "['--max_step', '10']; did you mean --max_steps?"),
    ("shortened cli flag", None, ["--warmup", "10"], "; did you mean --warmup_steps?"),
    ("ambiguous short flag", None, ["--lr", "1e-3"], "; did you mean --max_lr or --min_lr or --lr_decay_steps?"),
    # what to do depends on what the folder holds: tests/test_data_loader.py checks each kind
    ("folder of raw files as data_dir", None, ["--data_dir", "/tmp"], "data_dir '/tmp' has no manifest.json: "),
    ("bad cli type", None, ["--max_steps", "ten"], "max_steps"),
    ("bad yaml type", "max_steps: ten\n", [], "max_steps: expected an integer"),
    ("bad choice", "mixed_precision: fp8\n", [], "mixed_precision: 'fp8' is not one of"),
    ("batch not divisible", None, ["--total_batch_size", "1000"], "must be divisible by micro_batch_size"),
    ("seq_len > n_positions", None, ["--seq_len", "2048"], "seq_len (2048) exceeds n_positions (1024)"),
    ("heads do not divide width", None, ["--n_head", "5"], "n_embd (768) must be divisible by n_head (5)"),
    ("min_lr > max_lr", None, ["--min_lr", "1e-2"], "min_lr (0.01) must not exceed max_lr"),
    ("warmup longer than decay", None, ["--warmup_steps", "20000"], "warmup_steps (20000) must not exceed"),
    ("keep_last 1", None, ["--keep_last", "1"], "keep_last must be >= 2"),
    ("vocab too small", None, ["--vocab_size", "50000"], "vocab_size (50000) must be >= 50257"),
    ("beta out of range", None, ["--beta2", "1.0"], "beta2 must be in [0, 1)"),
    ("no data", None, ["--data_dir", "/nonexistent/data"], "does not exist: run `python -m data.prepare` first"),
    ("resume not a checkpoint", None, ["--resume", "/nonexistent/ckpt"], "is not 'auto', 'off' or an existing"),
    ("negative lr", None, ["--max_lr", "-1"], "max_lr must be > 0"),
    ("negative loss chunk", None, ["--loss_chunk_tokens", "-8"], "loss_chunk_tokens must be >= 0"),
    ("zero ddp timeout", None, ["--ddp_timeout", "0"], "ddp_timeout must be > 0"),
    ("ddp timeout beyond timedelta", None, ["--ddp_timeout", "99999999999999"], "ddp_timeout is in seconds"),
    ("unknown compile mode", "compile_mode: reduce-overhead\n", [], "compile_mode: 'reduce-overhead' is not one of"),
    ("compile mode without compile", None, ["--compile_mode", "max-autotune-no-cudagraphs"],
     "has no effect without compiling: add --compile true"),
    ("val_tokens below one window", None, ["--val_tokens", "100"], "val_tokens (100) is less than one window"),
    ("chunked loss with fp16", None, ["--loss_chunk_tokens", "4096", "--mixed_precision", "fp16"],
     "loss_chunk_tokens needs bf16 or fp32"),
    # a NaN passed every `< 0` check and trained with lr=nan, then called the NaN checkpoint the last good one
    ("nan min_lr", None, ["--min_lr", "nan"], "min_lr must be a finite number, got nan"),
    ("inf weight decay", "weight_decay: .inf\n", [], "weight_decay must be a finite number, got inf"),
    ("lr beyond fp32", None, ["--max_lr", "1e39"], "max_lr must be a finite number"),
    ("output_dir is a file", None, ["--output_dir", __file__], "is a file: pick a folder for the run"),
    ("output_dir under a file", None, ["--output_dir", __file__ + "/run"], "cannot be created: "),
    ("config is a folder", None, ["--config", str(REPO / "configs")], "is a folder, not a YAML file"),
    # the last --config was read and the first one's values silently dropped
    ("two presets", "max_steps: 5\n", ["--config", str(REPO / "configs/demo.yaml")], "config: one preset per run"),
    ("--config without a path", None, ["--config"], "argument --config: expected one argument"),
    # both stopped the run with a traceback once the model was built (numpy / torch refusing the seed)
    ("negative data_seed", None, ["--data_seed", "-1"], "data_seed must be >= 0"),
    ("seed beyond 64 bits", "seed: 99999999999999999999\n", [], "seed must be in [-2**63, 2**63)"),
    # ran the full 124M recipe without a word (OOM-killed on a small machine)
    ("empty preset", "# nothing yet\n", [], "holds no settings (empty, or comments only)"),
]


@pytest.mark.parametrize("name,preset,args,message", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_is_refused_and_writes_nothing(tmp_path, capsys, name, preset, args, message):
    data = _fake_data_dir(tmp_path)
    out = tmp_path / "run"
    argv = ["--data_dir", str(data), "--output_dir", str(out)]
    if preset is not None:
        (tmp_path / "bad.yaml").write_text(preset)
        argv = ["--config", str(tmp_path / "bad.yaml")] + argv
    argv += args
    with pytest.raises(ConfigError) as err:
        load_run_config(argv)
    assert message in str(err.value)
    assert train.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_yaml_on_off_no_mean_the_words_not_booleans(tmp_path):
    """YAML 1.1 reads unquoted off/on/no as booleans; the README writes `hellaswag_file: off`."""
    preset = tmp_path / "p.yaml"
    preset.write_text(f"data_dir: {_fake_data_dir(tmp_path)}\nhellaswag_file: off\ndata_prefetch: off\n"
                      "fused_adamw: on\nmixed_precision: no\nresume: off\n")
    cfg = load_run_config(["--config", str(preset)])
    assert (cfg.hellaswag_file, cfg.data_prefetch, cfg.fused_adamw, cfg.mixed_precision, cfg.resume) == (
        "off", "off", "on", "no", "off")
    preset.write_text("sample_prompt: yes\n")  # anywhere else a boolean is still a type error
    with pytest.raises(ConfigError, match="sample_prompt: expected a string, got True"):
        load_run_config(["--config", str(preset)])


def test_a_binary_preset_and_a_model_folder_as_output_dir_are_refused(tmp_path):
    data = _fake_data_dir(tmp_path)
    preset = tmp_path / "p.yaml"
    preset.write_bytes("max_steps: 5\n".encode("utf-16"))
    with pytest.raises(ConfigError, match="is not valid YAML text"):
        load_run_config(["--config", str(preset), "--data_dir", str(data)])
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds a model \\(config.json\\)"):
        load_run_config(["--data_dir", str(data), "--output_dir", str(export)])
    with pytest.raises(ConfigError, match="output_dir is the data_dir"):
        load_run_config(["--data_dir", str(data), "--output_dir", str(data)])


def test_a_tracker_asked_for_by_name_must_be_installed(tmp_path, monkeypatch):
    """--log_with tensorboard without tensorboard trained with no logging at all (Accelerate only warned)."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    argv = ["--data_dir", str(_fake_data_dir(tmp_path)), "--log_with", "tensorboard"]
    with pytest.raises(ConfigError, match=r"log_with 'tensorboard': the package is not installed \(pip install"):
        load_run_config(argv)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorboard" else
                        real_find_spec(name, *a))
    load_run_config(argv)  # installed: accepted


def test_all_errors_reported_at_once(tmp_path):
    data = _fake_data_dir(tmp_path)
    (tmp_path / "p.yaml").write_text("n_head: 5\nfoo: 1\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(["--config", str(tmp_path / "p.yaml"), "--data_dir", str(data), "--keep_last", "1",
                         "--min_lr", "1", "--bar", "2"])
    text = str(err.value)
    for fragment in ("unknown key 'foo'", "unknown command-line arguments ['--bar', '2']", "keep_last must be >= 2",
                     "min_lr (1.0) must not exceed", "divisible by n_head (5)"):
        assert fragment in text
    assert len(err.value.errors) == 5


def test_bad_values_on_the_command_line_do_not_hide_other_errors(tmp_path):
    data = _fake_data_dir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_run_config(["--data_dir", str(data), "--max_steps", "ten", "--mixed_precision=fp8", "--seq_len", "4096"])
    assert len(err.value.errors) == 3
    assert "invalid int value: 'ten'" in str(err.value) and "invalid choice: 'fp8'" in str(err.value)
    assert "seq_len (4096) exceeds n_positions (1024)" in str(err.value)


def test_existing_run_with_resume_off_is_refused(tmp_path):
    data = _fake_data_dir(tmp_path)
    (tmp_path / "run" / "checkpoints" / "step_00000002").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds checkpoints and resume is 'off'"):
        load_run_config(["--data_dir", str(data), "--output_dir", str(tmp_path / "run"), "--resume", "off"])


def test_bad_config_exit_code_from_the_command_line(tmp_path):
    """The real entry point in a new process: exit status 2, the messages on stderr, no run folder."""
    out = tmp_path / "run"
    (tmp_path / "bad.yaml").write_text("n_head: 5\nwarmup: 3\n")
    proc = subprocess.run(
        [sys.executable, "train.py", "--config", str(tmp_path / "bad.yaml"), "--data_dir", str(tmp_path / "none"),
         "--output_dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "unknown key 'warmup'" in proc.stderr and "divisible by n_head (5)" in proc.stderr
    assert "does not exist" in proc.stderr
    assert not out.exists()


def test_compile_mode_reaches_the_dynamo_plugin(tmp_path):
    """--compile_mode is what Accelerate compiles with (and the default is torch.compile's default)."""
    from accelerate.state import AcceleratorState, GradientState

    from training.accelerator import make_accelerator

    data = _fake_data_dir(tmp_path)
    for extra, mode in (([], "default"), (["--compile_mode", "max-autotune-no-cudagraphs"], "max-autotune-no-cudagraphs")):
        cfg = load_run_config(["--data_dir", str(data), "--output_dir", str(tmp_path / "run"), "--compile", "true",
                               "--log_with", "none", *extra])
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        try:
            plugin = make_accelerator(cfg).state.dynamo_plugin
        finally:
            AcceleratorState._reset_state(True)
            GradientState._reset_state()
        assert (plugin.backend.value.lower(), plugin.mode) == ("inductor", mode)


def test_a_file_as_data_dir_says_it_is_a_source_not_a_prepared_folder(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("hello\n")
    with pytest.raises(ConfigError, match="is a file, not a prepared data folder"):
        load_run_config(["--data_dir", str(text), "--output_dir", str(tmp_path / "run")])


def test_output_dir_in_a_checkpoint_is_refused(tmp_path):
    """A run written into another run's checkpoint (or its checkpoints/ folder) went unnoticed (its files are
    not in the checksums), and the other run's retention would delete it with that checkpoint."""
    data = _fake_data_dir(tmp_path)
    run = tmp_path / "A"
    ckpt = run / "checkpoints" / "step_00000004"
    ckpt.mkdir(parents=True)
    (run / "run_config.yaml").write_text("max_steps: 4\n")
    (ckpt / "MANIFEST.json").write_text("{}")
    (ckpt / "COMPLETE").write_text("x")
    for out, message in ((ckpt, f"is inside the checkpoint {ckpt}"),
                         (ckpt / "sub", f"is inside the checkpoint {ckpt}"),
                         (run / "checkpoints", f"is inside the checkpoints folder of the run {run}")):
        with pytest.raises(ConfigError, match="pick a new output_dir") as err:
            load_run_config(["--data_dir", str(data), "--output_dir", str(out)])
        assert message in str(err.value)
    load_run_config(["--data_dir", str(data), "--output_dir", str(run)])  # the run folder itself: fine
    load_run_config(["--data_dir", str(data), "--output_dir", str(tmp_path / "B")])
    # paths as the filesystem follows them: a link to the checkpoints folder is that folder, and a `..` that
    # climbs out of a checkpoint is not inside it
    (tmp_path / "link").symlink_to(run / "checkpoints")
    with pytest.raises(ConfigError, match="is inside the checkpoints folder of the run"):
        load_run_config(["--data_dir", str(data), "--output_dir", str(tmp_path / "link" / "new")])
    load_run_config(["--data_dir", str(data), "--output_dir", str(ckpt / ".." / ".." / "B")])


def test_a_key_given_twice_in_a_preset_is_refused(tmp_path):
    """PyYAML keeps the last of two equal keys without a word: a preset edited by appending a line silently
    overrode the earlier value."""
    data = _fake_data_dir(tmp_path)
    preset = tmp_path / "p.yaml"
    preset.write_text("max_lr: 6.0e-4\nmax_steps: 5\nmax_lr: 1.8e-3\n")
    with pytest.raises(ConfigError, match=r"(?s)key 'max_lr' is given twice.*p.yaml\", line 3"):
        load_run_config(["--config", str(preset), "--data_dir", str(data)])
    preset.write_text("max_lr: 6.0e-4\nmax_steps: 5\nwarmup_steps: 1\n")  # each key once: fine
    assert load_run_config(["--config", str(preset), "--data_dir", str(data)]).max_lr == 6.0e-4
    # a YAML merge key is not a key given twice: safe_load merges it, the keys written after it override
    preset.write_text("<<: {max_lr: 1.0e-3, max_steps: 5}\nmax_lr: 6.0e-4\nwarmup_steps: 1\n")
    cfg = load_run_config(["--config", str(preset), "--data_dir", str(data)])
    assert (cfg.max_lr, cfg.max_steps) == (6.0e-4, 5)


def test_help_shows_no_empty_or_misleading_defaults():
    from training.run_config import _build_parser

    text = _build_parser().format_help()
    assert "(default: )" not in text and "(default: None)" not in text
    assert "(default: 1337)" in text  # real defaults still shown


def test_the_warmup_hint_names_the_demo_preset_only_when_no_preset_is_in_use(tmp_path):
    data = _fake_data_dir(tmp_path)
    with pytest.raises(ConfigError, match="configs/demo.yaml is a small preset"):
        load_run_config(["--data_dir", str(data), "--max_steps", "4"])  # the 124M defaults: warmup 715
    with pytest.raises(ConfigError, match="warmup_steps \\(5\\) must not exceed") as err:
        load_run_config(["--config", str(Path(train.__file__).parent / "configs" / "demo.yaml"), "--data_dir", str(data),
                         "--max_steps", "4"])
    assert "demo.yaml is a small preset" not in str(err.value)  # it is the preset in use


def test_a_hellaswag_file_is_needed_on_the_main_process_machine_only(tmp_path, monkeypatch):
    """Only the main process reads the HellaSwag rows (it sends them to the other ranks): the other ranks, maybe on
    machines without that file, must not refuse the run over it."""
    from training.run_config import RunConfig, validate

    cfg = RunConfig(hellaswag_file=str(tmp_path / "missing.jsonl"))
    monkeypatch.setenv("RANK", "0")
    assert any("hellaswag_file" in e and "does not exist" in e for e in validate(cfg, 1))
    monkeypatch.setenv("RANK", "3")  # torchrun / accelerate launch: the global rank of this process
    assert not any("hellaswag_file" in e for e in validate(cfg, 4))
    monkeypatch.setenv("RANK", "0")
    folder = RunConfig(hellaswag_file=str(tmp_path))  # the folder, not the file in it: said so, not "does not exist"
    assert any(f"hellaswag_file '{tmp_path}' is a folder" in e for e in validate(folder, 1))


def test_resume_note_names_an_lr_schedule_change_only_when_the_lr_curve_changes():
    """Raising max_steps with the decay end kept (lr_decay_steps = the old max_steps, as the 'nothing to train'
    line advises, or a preset that fixes lr_decay_steps) leaves training.optim.lr_at unchanged: no note saying the
    LR schedule changed. A decay end that moves, or another warmup or peak, is still said."""
    from types import SimpleNamespace

    from training.startup import note_resume_changes

    def note(trained: dict, **now) -> list[str]:
        said = []
        base = {"max_steps": 8, "lr_decay_steps": None, "warmup_steps": 2, "max_lr": 1e-3, "min_lr": 1e-4,
                "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "adam_eps": 1e-8, "val_tokens": 1024}
        cfg, run_config = SimpleNamespace(**{**base, **now}), {**base, **trained}
        note_resume_changes(SimpleNamespace(log=said.append), cfg,
                            SimpleNamespace(meta={"step": 8, "run_config": run_config}))
        return [line for line in said if "learning-rate schedule" in line]

    assert note({}, max_steps=10, lr_decay_steps=8) == []  # the advised way to extend a finished run
    assert note({"lr_decay_steps": 8}, max_steps=10, lr_decay_steps=8) == []  # a preset that fixes the decay end
    assert note({}, max_steps=10) == [
        "note: resuming with another learning-rate schedule (max_steps 8 -> 10): from step 9 the LR follows the new one"]
    assert note({"lr_decay_steps": 8}, max_steps=10, lr_decay_steps=8, max_lr=2e-3) == [
        "note: resuming with another learning-rate schedule (max_lr 0.001 -> 0.002): from step 9 the LR follows "
        "the new one"]


@pytest.mark.parametrize("setting,launcher,noted", [
    ("bf16", "fp16", True),    # `accelerate launch --mixed_precision fp16` under the 124M preset's bf16
    ("no", "bf16", True),
    ("auto", "fp16", False),   # auto follows the launcher: nothing to say
    ("bf16", "bf16", False),
    ("bf16", "no", False),     # 'no' is also the launcher's default, not a request
])
def test_a_launcher_precision_the_run_config_overrides_is_said(monkeypatch, setting, launcher, noted):
    from training.banner import _launcher_precision_note

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    note = _launcher_precision_note(RunConfig(mixed_precision=setting))
    assert bool(note) == noted
    if noted:
        assert f"the launcher's {launcher} is not used" in note and f"--mixed_precision {launcher} to train.py" in note


def test_a_home_relative_path_in_a_preset_is_expanded(tmp_path, monkeypatch):
    """`output_dir: ~/runs/x` in YAML reaches no shell: training made a folder literally named '~' in the current
    directory (which `rm -rf ~` would then 'clean up'), and `data_dir: ~/data` was said not to exist."""
    monkeypatch.setenv("HOME", str(tmp_path))
    data = _fake_data_dir(tmp_path)
    preset = tmp_path / "p.yaml"
    preset.write_text(f"data_dir: ~/{data.relative_to(tmp_path)}\noutput_dir: ~/runs/x\nhellaswag_file: off\n")
    cfg = load_run_config(["--config", "~/p.yaml"])
    assert cfg.data_dir == str(data) and cfg.output_dir == str(tmp_path / "runs" / "x")
    assert cfg.config == str(preset) and cfg.resume == "auto" and cfg.init_from == "scratch"


def test_an_exported_run_config_reused_as_a_preset_asks_for_the_paths_it_cut(tmp_path, monkeypatch):
    """An export's logs/run_config.yaml has its absolute paths cut to `<local>/NAME`: reused as a preset, its
    output_dir made a folder named "<local>" in the current directory (the run trained there once given a
    data_dir), and data_dir was said not to exist. Its
    `config: <local>/...` line is only a record, and the preset loads once the paths are given."""
    monkeypatch.chdir(tmp_path)
    data = _fake_data_dir(tmp_path)
    preset = tmp_path / "run_config.yaml"
    preset.write_text("config: <local>/gpt2_124m.yaml\ndata_dir: <local>/fineweb_edu_10B\noutput_dir: <local>/124M\n"
                      "hellaswag_file: off\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(["--config", str(preset)])
    assert [line for line in str(err.value).splitlines() if "an export cut" in line] == [
        f"  - {name} '<local>/{value}' is a path an export cut to its last name (exported run configs keep no local "
        f"folders): pass --{name} with its path on this machine" for name, value in (("data_dir", "fineweb_edu_10B"),
                                                                                     ("output_dir", "124M"))]
    cfg = load_run_config(["--config", str(preset), "--data_dir", str(data), "--output_dir", "runs/x"])
    assert cfg.data_dir == str(data)


@pytest.mark.parametrize("held,message", [
    ({"manifest.json": "{}"}, "holds prepared data (data.prepare's manifest.json)"),
    ({"prepare_state.json": "{}"}, "holds prepared data (data.prepare's prepare_state.json)"),
    ({"metrics.jsonl": "x\n", "notes.txt": "precious\n"}, "holds a metrics.jsonl that train.py did not write"),
])
def test_an_output_dir_of_other_files_is_refused(tmp_path, held, message):
    """train.py appended its rows to a user's own metrics.jsonl, and made checkpoints/ in another prepared data
    folder, which data.prepare then refused (bad-input audit)."""
    from training.run_config import validate

    out = tmp_path / "out"
    out.mkdir()
    for name, text in held.items():
        (out / name).write_text(text)
    cfg = RunConfig(data_dir=str(_fake_data_dir(tmp_path)), output_dir=str(out))
    assert any(message in e for e in validate(cfg, 1)), validate(cfg, 1)
    (out / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": 9.0}\n')  # a run's: fine
    for name in ("manifest.json", "prepare_state.json"):
        (out / name).unlink(missing_ok=True)
    assert not [e for e in validate(cfg, 1) if "output_dir" in e]
    # a run's folder whose log starts with a line a crash cut short (the log repairs it on resume): not refused
    (out / "metrics.jsonl").write_bytes(b"\0\0\0\0")
    (out / "run_config.yaml").write_text("max_steps: 8\n")
    assert not [e for e in validate(cfg, 1) if "output_dir" in e]


def test_resume_pointed_at_a_run_s_checkpoints_folder_names_what_to_pass(tmp_path):
    from training.run_config import validate

    run = tmp_path / "run"
    for step in (2, 4):
        (run / "checkpoints" / f"step_{step:08d}").mkdir(parents=True)
        (run / "checkpoints" / f"step_{step:08d}" / "COMPLETE").write_text("done\n")
    (run / "checkpoints" / "step_00000006").mkdir()  # not committed: not suggested
    cfg = RunConfig(data_dir=str(_fake_data_dir(tmp_path)), output_dir=str(tmp_path / "new"),
                    resume=str(run / "checkpoints"))
    errors = [e for e in validate(cfg, 1) if e.startswith("resume")]
    assert len(errors) == 1 and f"pass the run folder, --resume {run}, " in errors[0]
    assert f"--resume {run / 'checkpoints' / 'step_00000004'})" in errors[0]


def test_a_permission_error_met_after_start_up_is_one_line_with_exit_1(tmp_path, monkeypatch, capsys):
    """A file train.py may not read, met once training has started (a shard, a HellaSwag copy): one line naming it
    and what was kept, exit 1 (an unexpected error), not a traceback (test audit: this catch was untested)."""
    import training.loop

    data = _fake_data_dir(tmp_path)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000004"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text("done\n")
    shard = data / "train_000000.npy"

    def refused(cfg):
        raise PermissionError(13, "Permission denied", str(shard))

    monkeypatch.setattr(training.loop, "train", refused)
    assert train.main(["--data_dir", str(data), "--output_dir", str(tmp_path / "run"), "--hellaswag_file", "off"]) == 1
    assert capsys.readouterr().err == (
        f"error: permission denied: {shard}: check that this user can read it (and write it, for an output): ls -l "
        "shows its modes; the committed checkpoints are intact (newest: step_00000004; continue with --resume auto)\n")


def test_the_start_banner_carries_the_launcher_precision_note(monkeypatch, tmp_path):
    """The note reaches the banner's device line (only its helper was tested: test audit by mutation)."""
    from types import SimpleNamespace

    import torch

    from training.banner import log_start_banner

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    logged = []
    from accelerate.utils import DistributedType

    session = SimpleNamespace(accelerator=SimpleNamespace(mixed_precision="no", num_processes=1,
                                                          device=torch.device("cpu"),
                                                          distributed_type=DistributedType.NO),
                              world=1, log=logged.append)
    model = SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa"))
    checked = SimpleNamespace(resume=None, raw_model=model)
    prepared = SimpleNamespace(device=torch.device("cpu"), device_name="cpu", params=(10, 2), peak_flops=None,
                               loader=SimpleNamespace(tokens_per_epoch=10_000), prefetcher=None, grad_accum=1,
                               flops_per_token=1e6, start_step=0)
    cfg = RunConfig(output_dir=str(tmp_path), mixed_precision="no", eval_every=0, eval_at_end=False, log_with="none",
                    total_batch_size=256, micro_batch_size=8, seq_len=32, max_steps=2, warmup_steps=0)
    log_start_banner(session, cfg, checked, prepared)
    device_line = logged[1].splitlines()[0]
    assert "precision no (the launcher's fp16 is not used: the run config's mixed_precision decides; pass " \
           "--mixed_precision fp16 to train.py)" in device_line
