"""Export with code: a saved folder loads in a FRESH process through the Auto classes and remote code.

Fresh process matters: once `register_auto_classes()` ran in a process, the local class would win over the
exported code and the test would prove nothing.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from model_helpers import assert_padded_ids_impossible, tiny_model

pytestmark = pytest.mark.model

FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    folder, ids = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    from transformers import AutoModel
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()  # the transformer without the head
    # Either explicit choice loads the tokenizer with no y/N prompt (only the unset default would ask).
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    tok_without_code = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    assert tok_without_code("Hello").input_ids == tok("Hello").input_ids
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits
    gen = pipeline("text-generation", model=folder, trust_remote_code=True)
    text = gen("Hello, I'm a language model,", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    print(json.dumps({
        "class_module": type(model).__module__,
        "logits": logits.flatten().tolist(),
        "base_class": type(base).__name__,
        "hidden": base(torch.tensor(ids)).last_hidden_state.flatten().tolist(),
        "tokenizer_len": len(tok),
        "generated": text,
    }))
    """
)


def test_export_with_code_loads_in_a_fresh_process(tmp_path, gpt2_tokenizer):
    model = tiny_model(seed=11)
    model.save_pretrained(tmp_path)
    gpt2_tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_gpt2repro.GPT2ReproConfig",
        "AutoModel": "modeling_gpt2repro.GPT2ReproModel",
        "AutoModelForCausalLM": "modeling_gpt2repro.GPT2ReproForCausalLM",
    }
    assert (tmp_path / "modeling_gpt2repro.py").is_file() and (tmp_path / "configuration_gpt2repro.py").is_file()

    ids = torch.randint(0, 50257, (2, 9))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(tmp_path), json.dumps(ids.tolist())],
        capture_output=True, text=True, timeout=240, env=env, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[y/N]" not in result.stdout + result.stderr  # nothing asked the user anything
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["class_module"].startswith("transformers_modules"), out["class_module"]  # the exported code ran
    with torch.no_grad():
        expected = model(ids).logits.flatten(0, 1)  # (B*T, V)
    got = torch.tensor(out["logits"]).view_as(expected)
    assert (got[:, :50257] - expected[:, :50257]).abs().max().item() <= 1e-6
    assert_padded_ids_impossible(got)
    assert out["base_class"] == "GPT2ReproModel"
    with torch.no_grad():
        hidden = model.transformer(ids).last_hidden_state.flatten()
    assert (torch.tensor(out["hidden"]) - hidden).abs().max().item() <= 1e-6
    assert out["tokenizer_len"] == 50257
    assert out["generated"].startswith("Hello, I'm a language model,") and len(out["generated"]) > 30
