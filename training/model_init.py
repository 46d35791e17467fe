"""The model a run trains: from scratch (the run config's architecture), from OpenAI GPT-2, from one of our
folders or any stock GPT-2 folder, or from a checkpoint when resuming."""

import functools
from pathlib import Path
from typing import Optional

import torch

from training import checkpoint as ckpt
from training.run_config import RunConfig

ARCH_KEYS = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")  # run-config fields of the architecture


def build_model_config(cfg: RunConfig):
    from configuration_gpt2repro import GPT2ReproConfig

    return GPT2ReproConfig(**{key: getattr(cfg, key) for key in ARCH_KEYS})


def build_model(cfg: RunConfig, resume_dir: Optional[Path]):
    """The model in fp32: from a checkpoint when resuming, else from scratch / OpenAI GPT-2 / a GPT-2 folder."""
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    if resume_dir is not None:
        config = GPT2ReproConfig.from_pretrained(resume_dir / "model")
        model = GPT2ReproForCausalLM(config)
        ckpt.load_weights(model, resume_dir / "model")
    elif cfg.init_from == "scratch":
        model = GPT2ReproForCausalLM(build_model_config(cfg))
    else:
        model = load_pretrained(cfg.init_from)
    model.set_attn_implementation(cfg.attn_implementation)
    return model.float()


def load_pretrained(init_from: str):
    """OpenAI GPT-2 ('gpt2' = openai-community/gpt2 on the Hub), one of our folders, or any stock GPT-2 folder."""
    from convert_gpt2 import load_stock_gpt2
    from modeling_gpt2repro import GPT2ReproForCausalLM

    if init_from == "gpt2":
        from huggingface_hub import try_to_load_from_cache

        from publish.hub import hub_reachable

        # offline and not in the Hub cache: say so now, not after the libraries' half a minute of retries
        cached = try_to_load_from_cache("openai-community/gpt2", "config.json")  # a path, None or a sentinel
        if not isinstance(cached, str) and not hub_reachable():
            raise OSError("init_from 'gpt2' downloads openai-community/gpt2 from the Hub, which cannot be reached "
                          "(and it is not in the Hub cache): go online once, or pass a local GPT-2 folder")
        return load_stock_gpt2("openai-community/gpt2")
    # a model folder, a checkpoint folder or a run folder (its newest intact checkpoint), as export and eval take
    from publish.model_weights import from_pretrained_checked, read_config_json

    model_dir = init_model_dir(init_from)
    if read_config_json(model_dir).get("model_type") == "gpt2repro":  # weights missing or of other shapes: refused
        return from_pretrained_checked(GPT2ReproForCausalLM, model_dir, dtype=torch.float32)
    return load_stock_gpt2(str(model_dir))


@functools.lru_cache(maxsize=4)
def init_model_dir(init_from: str) -> Path:
    """The model folder an init_from folder stands for: itself, a checkpoint's model/, or a run folder's newest
    intact checkpoint (as export and eval resolve it). Resolved once per run (train() clears the cache), so
    the start line names the folder that was loaded even if the source run commits a newer checkpoint meanwhile."""
    from publish.model_source import resolve_source

    return resolve_source(init_from).model_dir


def describe_origin(init_from: str) -> str:
    """What a run starts from, for the log: a folder is named down to the model folder it resolved to."""
    if init_from in ("scratch", "gpt2"):
        return init_from
    model_dir = init_model_dir(init_from)
    return init_from if Path(model_dir) == Path(init_from) else f"{init_from} (model: {model_dir})"
