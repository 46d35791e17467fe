"""A build-nanogpt checkpoint (log/model_NNNNN.pt) converted to our model: same logits as an independent GPT-2
(transformers' own, random; tests/build_nanogpt_checkpoint.py writes it as build-nanogpt does), loaded without
running code from the file, and bad files refused in one line. Its model card: tests/test_export_run.py."""

import os

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
    state = {k: v for k, v in build_nanogpt_state(gpt2).items() if ".h.1." not in k}
    state["_orig_mod.transformer.h.0.attn.c_attn.weight"] = torch.zeros(5, 64)
    return save_checkpoint(path, gpt2, model=state)


@pytest.mark.parametrize("make, message", [
    (lambda p, s: p, "is not a file"),
    (lambda p, s: (p.write_text("not a checkpoint\n"), p)[1], "is not a checkpoint torch.save wrote"),
    (_truncated, "is not a checkpoint torch.save wrote, or a damaged or incomplete copy"),
    (_llm_c_file, "is an llm.c model file"),
    (lambda p, s: save_checkpoint(p, s, model_args={"n_layer": 2}), "nanoGPT checkpoint"),
    (lambda p, s: (torch.save(build_nanogpt_state(s), p), p)[1], "is not a build-nanogpt checkpoint"),
    (lambda p, s: save_checkpoint(p, s, config=None), "gives no n_head"),
    (_untied, "not tied"),
    (_one_layer_short, "its weights are not GPT-2's"),
    (lambda p, s: save_checkpoint(p, s, config=GPTConfig(n_head=3)), "no valid gpt2repro config"),
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
