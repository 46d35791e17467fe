"""A build-nanogpt checkpoint (log/model_NNNNN.pt) converted to our model: same logits as an independent GPT-2
(transformers' own, random; tests/build_nanogpt_checkpoint.py writes it as build-nanogpt does), loaded without
running code from the file, and bad files refused in one line. Its model card: tests/test_export_run.py."""

import json
import os

import numpy as np
import pytest
import torch

import convert_gpt2
from build_nanogpt_checkpoint import GPTConfig, build_nanogpt_state, save_checkpoint
from model_helpers import assert_padded_ids_impossible
from modeling_gpt2repro import GPT2ReproForCausalLM
from publish.model_weights import from_pretrained_checked
from publish.nanogpt_checkpoint import load_build_nanogpt

pytestmark = pytest.mark.model

def test_converted_checkpoint_gives_gpt2s_logits_and_loads_as_a_model_folder(tmp_path, random_gpt2,
                                                                             build_nanogpt_main, capsys):
    ckpt = save_checkpoint(tmp_path / "model_05000.pt", random_gpt2)
    ours, meta = load_build_nanogpt(ckpt)
    assert meta == {"step": 5000, "val_loss": 3.0712}
    assert (ours.config.n_layer, ours.config.n_head, ours.config.n_embd, ours.config.n_positions) == (2, 2, 64, 128)
    x = torch.randint(0, 50257, (2, 48))
    with torch.no_grad():
        ref = random_gpt2(x).logits
        got = ours(x).logits
    assert (got[..., :50257] - ref).abs().max().item() <= 1e-5
    assert_padded_ids_impossible(got)

    convert_gpt2.main(["--from-build-nanogpt", str(ckpt), "--out", str(tmp_path / "ours")])
    assert "build-nanogpt step 5000, val loss 3.0712)" in capsys.readouterr().out  # no log.txt beside it
    folder = from_pretrained_checked(GPT2ReproForCausalLM, tmp_path / "ours").eval()
    assert (tmp_path / "ours" / "tokenizer.json").is_file()
    # the checkpoint's context (128 here), not GPT-2's 1024
    assert json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())["model_max_length"] == 128
    with torch.no_grad():
        assert torch.equal(folder(x).logits, got)
        generated = folder.generate(x[:1, :8], max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 12)


def _make_marker(path):
    os.makedirs(path)


def test_nothing_the_checkpoint_pickles_is_run(tmp_path, random_gpt2, build_nanogpt_main, capsys):
    """An entry whose unpickling calls a function of the script that wrote it (here one that makes a folder):
    plain torch.load runs it, the converter does not, and still converts the weights. One that calls os.makedirs
    itself is refused (torch blocks that module even when allowed)."""
    marker = tmp_path / "was-run"

    class Sneaky:
        def __init__(self, function):
            self.function = function

        def __reduce__(self):
            return self.function, (str(marker),)

    ckpt = save_checkpoint(tmp_path / "model.pt", random_gpt2, extra=Sneaky(_make_marker))
    torch.load(ckpt, weights_only=False)  # what unpickling the usual way does
    assert marker.is_dir()
    marker.rmdir()
    model, _ = load_build_nanogpt(ckpt)
    assert not marker.exists()
    assert model.config.n_layer == 2

    ckpt = save_checkpoint(tmp_path / "model.pt", random_gpt2, extra=Sneaky(os.makedirs))
    with pytest.raises(SystemExit):
        convert_gpt2.main(["--from-build-nanogpt", str(ckpt), "--out", str(tmp_path / "out")])
    assert "names code that would run when it is loaded (Trying to load unsupported GLOBAL os.makedirs" in \
        capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_checkpoints_of_ddp_or_without_compile_convert_too(tmp_path, random_gpt2, build_nanogpt_main):
    for prefix in ("", "module._orig_mod."):
        state = build_nanogpt_state(random_gpt2, prefix=prefix)
        torch.save({"model": state, "config": GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=128)},
                   tmp_path / "m.pt")
        model, meta = load_build_nanogpt(tmp_path / "m.pt")
        assert meta == {}
        assert torch.equal(model.transformer.h[1].mlp.c_fc.weight, random_gpt2.transformer.h[1].mlp.c_fc.weight.t())


@pytest.mark.parametrize("step, val_loss, meta", [
    (np.int64(400), np.float32(3.25), {"step": 400, "val_loss": 3.25}),   # numpy numbers (forks log them so)
    (400, torch.tensor(3.25), {"step": 400, "val_loss": 3.25}),            # a 0-dim tensor not .item()-ed
    ("400", float("nan"), {"step": 300}),                                  # unusable: the file name's step
    (-5, float("inf"), {"step": 300}),
])
def test_the_step_and_val_loss_are_read_as_numbers_or_left_out(tmp_path, random_gpt2, build_nanogpt_main, step,
                                                               val_loss, meta):
    """A numpy val_loss was taken for an unknown object and dropped, and the card then showed the log's last step
    as this model's; a negative step or an infinite loss was written as it was (review of the converter)."""
    ckpt = save_checkpoint(tmp_path / "model_00300.pt", random_gpt2, step=step, val_loss=val_loss)
    assert load_build_nanogpt(ckpt)[1] == meta


def test_a_diverged_checkpoint_is_refused_and_a_full_disk_leaves_nothing(tmp_path, random_gpt2, build_nanogpt_main,
                                                                         capsys, monkeypatch):
    state = build_nanogpt_state(random_gpt2)
    state["_orig_mod.transformer.h.1.mlp.c_fc.weight"][0, 0] = float("nan")
    ckpt = save_checkpoint(tmp_path / "model_00300.pt", random_gpt2, model=state)
    with pytest.raises(SystemExit):
        convert_gpt2.main(["--from-build-nanogpt", str(ckpt), "--out", str(tmp_path / "out")])
    assert "1 weights hold NaN or infinite values (e.g. transformer.h.1.mlp.c_fc.weight)" in capsys.readouterr().err

    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full_disk(*args, **kwargs):  # what safetensors raises when the disk fills up (config.json is written first)
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                              'space left on device" })')

    ckpt = save_checkpoint(tmp_path / "model_00300.pt", random_gpt2)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        convert_gpt2.main(["--from-build-nanogpt", str(ckpt), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "No space left on device" in err and "free some space" in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_00300.pt"]  # no half-written model folder


def _llm_c_file(path, _stock):
    header = torch.zeros(256, dtype=torch.int32)
    header[0], header[1] = 20240326, 3
    path.write_bytes(header.numpy().tobytes() + b"\0" * 64)
    return path


def _truncated(path, gpt2):
    data = save_checkpoint(path, gpt2).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _untied(path, gpt2):
    state = build_nanogpt_state(gpt2)
    state["_orig_mod.lm_head.weight"] = state["_orig_mod.lm_head.weight"].clone() + 1
    return save_checkpoint(path, gpt2, model=state)


def _one_layer_short(path, gpt2):
    return save_checkpoint(path, gpt2, model={k: v for k, v in build_nanogpt_state(gpt2).items() if ".h.1." not in k})


def _one_weight_reshaped(path, gpt2):
    state = build_nanogpt_state(gpt2)
    state["_orig_mod.transformer.h.0.attn.c_attn.weight"] = torch.zeros(5, 64)
    return save_checkpoint(path, gpt2, model=state)


@pytest.mark.parametrize("make, message", [
    (lambda p, s: p, "is not a file"),
    (lambda p, s: (p.write_text("not a checkpoint\n"), p)[1], "is not a checkpoint in the zip format torch.save"),
    (_truncated, "or it is a damaged or incomplete copy of one"),
    (_llm_c_file, "is an llm.c model file"),
    (lambda p, s: save_checkpoint(p, s, model_args={"n_layer": 2}), "nanoGPT checkpoint"),
    (lambda p, s: (torch.save(build_nanogpt_state(s), p), p)[1], "is not a build-nanogpt checkpoint"),
    (lambda p, s: save_checkpoint(p, s, config=None), "gives no n_head"),
    (_untied, "not tied"),
    (_one_layer_short, "its config and its weights disagree: n_layer 2 (the weights: 1)"),
    (_one_weight_reshaped, "its weights are not GPT-2's"),
    (lambda p, s: save_checkpoint(p, s, config=GPTConfig(n_head=3, n_layer=2, n_embd=64, block_size=128)),
     "no valid gpt2repro config"),
])
def test_bad_checkpoints_are_refused_in_one_line(tmp_path, random_gpt2, build_nanogpt_main, capsys, make,
                                                 message):
    source = make(tmp_path / "model_00100.pt", random_gpt2)
    with pytest.raises(SystemExit) as exit_info:
        convert_gpt2.main(["--from-build-nanogpt", str(source), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_eval_and_export_point_a_checkpoint_file_to_the_converter(tmp_path, random_gpt2, build_nanogpt_main):
    from eval.errors import EvalInputError
    from eval.load import resolve_model_dir

    (tmp_path / "log").mkdir()
    ckpt = save_checkpoint(tmp_path / "log" / "model_05000.pt", random_gpt2)
    for path in (ckpt, tmp_path / "log"):
        with pytest.raises(EvalInputError, match="convert_gpt2.py --from-build-nanogpt"):
            resolve_model_dir(path)


def test_other_commands_given_a_checkpoint_file_point_at_the_converter(tmp_path, random_gpt2, build_nanogpt_main,
                                                                        capsys):
    """train.py --init_from FILE and convert_gpt2.py --from-gpt2 FILE said only that it was no model folder (or
    that a 'config file is not valid JSON'); an empty path was a TypeError traceback (review of the converter)."""
    from training.run_config import RunConfig, validate

    ckpt = save_checkpoint(tmp_path / "model_05000.pt", random_gpt2)
    problems = validate(RunConfig(data_dir=str(tmp_path), output_dir=str(tmp_path / "run"), init_from=str(ckpt)),
                        world_size=1)
    assert any("init_from" in p and "--from-build-nanogpt FILE" in p for p in problems), problems
    for argv, message in ((["--from-gpt2", str(ckpt)], "is not a GPT-2 model folder: a build-nanogpt checkpoint"),
                          (["--from-build-nanogpt", ""], "a path given to convert_gpt2.py is empty"),
                          (["--from-gpt2", ""], "a path given to convert_gpt2.py is empty")):
        with pytest.raises(SystemExit) as exit_info:
            convert_gpt2.main([*argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err, err
