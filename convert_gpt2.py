"""Conversion both ways between our GPT2ReproForCausalLM and transformers' stock GPT-2 (`GPT2LMHeadModel`).

    # OpenAI GPT-2 (Hub, when online) or any local GPT-2 folder -> ours (vocab padded to 50304 rows)
    model = load_stock_gpt2("openai-community/gpt2")          # or load_stock_gpt2("/path/to/gpt2-folder")

    # ours -> stock GPT-2 (50257 rows, no remote code): vLLM, TGI, llama.cpp converters, ... all know it
    save_stock_gpt2(model, "out/gpt2-format", tokenizer)

    python convert_gpt2.py --from-gpt2 PATH_OR_REPO --out DIR     # writes our format (with code)
    python convert_gpt2.py --to-gpt2 OUR_MODEL_DIR --out DIR      # writes stock GPT-2 format (also a run or
                                                                  # checkpoint folder, as for export.py)
    python convert_gpt2.py --from-build-nanogpt log/model_19072.pt --out DIR   # a build-nanogpt checkpoint ->
                                                                  # our format (publish/nanogpt_checkpoint.py)

The mapping is names-for-names plus one documented transpose: HF stores four matmuls per block as `Conv1D`
with weight (in, out); we use `nn.Linear` with weight (out, in). Hub files for `openai-community/gpt2` have no
`transformer.` prefix and may carry old causal-mask buffers (`.attn.bias`, `.attn.masked_bias`): loading through
`GPT2LMHeadModel.from_pretrained` normalises both before we see the weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from configuration_gpt2repro import GPT2ReproConfig
from modeling_gpt2repro import GPT2ReproForCausalLM

# The Conv1D weights of each block (stored (in, out) in HF GPT-2): exactly these need `.t()`.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _needs_transpose(name: str) -> bool:
    return name.startswith("transformer.h.") and name.endswith(TRANSPOSED)


def _check_stock_config(config) -> None:
    """Refuse GPT-2 variants our architecture does not implement, naming the field."""
    problems = []
    if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function={config.activation_function!r} (we implement tanh GELU, 'gelu_new')")
    if config.n_inner not in (None, 4 * config.n_embd):
        problems.append(f"n_inner={config.n_inner} (we implement 4 * n_embd = {4 * config.n_embd})")
    for flag, wanted in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("reorder_and_upcast_attn", False),
        ("add_cross_attention", False),
    ):
        if getattr(config, flag, wanted) != wanted:
            problems.append(f"{flag}={getattr(config, flag)!r} (we implement {wanted})")
    if problems:
        raise ValueError("This GPT-2 checkpoint uses options gpt2repro does not implement: " + "; ".join(problems))


def config_from_stock(stock_config, vocab_size: int | None = None) -> GPT2ReproConfig:
    """Our config for a stock GPT2Config; `vocab_size` rows (default: stock vocab padded up to a multiple of 64)."""
    _check_stock_config(stock_config)
    real = stock_config.vocab_size
    rows = vocab_size if vocab_size is not None else ((real + 63) // 64) * 64  # 50257 -> 50304
    return GPT2ReproConfig(
        vocab_size=rows,
        tokenizer_vocab_size=real,
        n_positions=stock_config.n_positions,
        n_embd=stock_config.n_embd,
        n_layer=stock_config.n_layer,
        n_head=stock_config.n_head,
        layer_norm_epsilon=stock_config.layer_norm_epsilon,
        initializer_range=stock_config.initializer_range,
        bos_token_id=stock_config.bos_token_id,
        eos_token_id=stock_config.eos_token_id,
    )


def stock_to_ours_state_dict(stock_state: dict, rows: int) -> dict:
    """Stock GPT2LMHeadModel state dict -> ours: transpose the Conv1D weights, pad the embedding to `rows`
    (padded rows are zero: no input ever has those ids and their logits are PADDED_LOGIT)."""
    ours = {}
    for name, tensor in stock_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")) and tensor.dim() > 1:
            continue  # old causal-mask buffers, not weights (`attn.c_attn.bias` is 1-D and is kept)
        if name == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        tensor = tensor.t().contiguous() if _needs_transpose(name) else tensor
        if name == "transformer.wte.weight" and tensor.shape[0] < rows:
            tensor = torch.cat([tensor, tensor.new_zeros(rows - tensor.shape[0], tensor.shape[1])])
        ours[name] = tensor
    return ours


def load_stock_gpt2(path_or_repo: str, vocab_size: int | None = None, **from_pretrained_kwargs) -> GPT2ReproForCausalLM:
    """Load OpenAI GPT-2 (a Hub id such as `openai-community/gpt2`, when online) or any local GPT-2 folder into
    our model, fp32. Extra keyword arguments go to `GPT2LMHeadModel.from_pretrained` (revision, cache_dir, ...)."""
    from transformers import GPT2LMHeadModel

    from_pretrained_kwargs.setdefault("dtype", torch.float32)
    try:
        stock, info = GPT2LMHeadModel.from_pretrained(path_or_repo, output_loading_info=True, **from_pretrained_kwargs)
    except OSError as err:
        raise OSError(
            f"Could not load a GPT-2 checkpoint from {path_or_repo!r}: pass a local folder with config.json and "
            f"model.safetensors (or pytorch_model.bin), or a Hub id while online. ({err})"
        ) from err
    # from_pretrained initialises what the checkpoint lacks at random and only logs it: another architecture
    # (a BERT folder) would "load" as a random GPT-2
    missing = sorted(k for k in info["missing_keys"] if k != "lm_head.weight")
    if missing:
        raise ValueError(f"{path_or_repo!r} is not a GPT-2 checkpoint (model_type {stock.config.model_type!r} on "
                         f"load; {len(missing)} GPT-2 weights missing, e.g. {missing[:3]}): pass a GPT-2 folder")
    head, embedding = stock.lm_head.weight, stock.transformer.wte.weight
    if head.data_ptr() != embedding.data_ptr() and not torch.equal(head, embedding):
        raise ValueError(f"{path_or_repo!r} has an LM head that is not tied to its token embedding "
                         "(tie_word_embeddings=False): gpt2repro implements GPT-2's tied head only")
    config = config_from_stock(stock.config, vocab_size)
    model = GPT2ReproForCausalLM(config)
    missing, unexpected = model.load_state_dict(stock_to_ours_state_dict(stock.state_dict(), config.vocab_size), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied
    if missing or unexpected:
        raise ValueError(f"GPT-2 weights do not map onto gpt2repro: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.eval()


def to_stock_gpt2(model: GPT2ReproForCausalLM):
    """Our model -> transformers' stock `GPT2LMHeadModel` with `tokenizer_vocab_size` (50257) rows, fp32.
    Its probabilities over the real ids equal ours (our padded ids have zero probability)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    stock_config = GPT2Config(
        vocab_size=c.tokenizer_vocab_size,
        n_positions=c.n_positions,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        activation_function="gelu_new",
        layer_norm_epsilon=c.layer_norm_epsilon,
        initializer_range=c.initializer_range,
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        tie_word_embeddings=True,
    )
    stock = GPT2LMHeadModel(stock_config)
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        tensor = tensor.detach().float()
        if name == "transformer.wte.weight":
            tensor = tensor[: c.tokenizer_vocab_size]
        state[name] = tensor.t().contiguous() if _needs_transpose(name) else tensor.clone()
    missing, unexpected = stock.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise ValueError(f"gpt2repro weights do not map onto GPT-2: missing {missing}, unexpected {unexpected}")
    stock.tie_weights()
    return stock.eval()


def save_stock_gpt2(model: GPT2ReproForCausalLM, out_dir: str | Path, tokenizer=None):
    """Write a stock GPT-2 folder (config model_type "gpt2", no code files) that loads without remote code."""
    stock = to_stock_gpt2(model)
    stock.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return stock


def _stock_tokenizer(path_or_repo: str):
    """The tokenizer to save with a converted stock GPT-2: the folder's own when it has one that loads (a GPT-2
    with added tokens keeps them), else GPT-2's (data.tokenizer, offline)."""
    from data.tokenizer import gpt2_tokenizer, saved_tokenizer

    folder = Path(path_or_repo)
    return (saved_tokenizer(folder) if folder.is_dir() else None) or gpt2_tokenizer()


def _new_out(out: str | Path) -> Path:
    from eval.errors import EvalInputError

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvalInputError(f"--out {out} exists and is not an empty folder: choose a new folder")
    return out


def convert(from_gpt2: str | None, to_gpt2: str | None, out: str | Path) -> Path:
    """What the command line does; bad input raises eval.errors.EvalInputError (one line, exit 2).

    `to_gpt2` may be a model folder, a checkpoint folder or a run folder (its newest verified checkpoint), as for
    export.py and eval/; the model's own tokenizer goes with it (GPT-2's when the folder has none)."""
    from eval.errors import EvalInputError

    out = _new_out(out)
    if from_gpt2:
        from eval.load import _model_type

        if Path(from_gpt2).is_file() or any(Path(from_gpt2).glob("model_*.pt")):  # a .pt, a build-nanogpt log/
            raise EvalInputError(f"{from_gpt2} is not a GPT-2 model folder: a build-nanogpt checkpoint "
                                 "(log/model_NNNNN.pt) converts with --from-build-nanogpt FILE")
        if (Path(from_gpt2) / "config.json").is_file() and _model_type(Path(from_gpt2)) == "gpt2repro":
            raise EvalInputError(f"{from_gpt2} is already a gpt2repro model: nothing to convert (--to-gpt2 writes the "
                                 "stock GPT-2 format)")
        from safetensors import SafetensorError

        from publish.model_weights import first_line

        try:
            model = load_stock_gpt2(from_gpt2)
        except SafetensorError as err:  # a truncated or garbled weights file
            raise EvalInputError(f"{from_gpt2}: its weights file is damaged or incomplete ({err}): copy or download "
                                 "the model again") from None
        except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: transformers' shape-mismatch report
            raise EvalInputError(first_line(err)) from None  # with an "Invalid GPT2ReproConfig:" heading's reasons
        tokenizer = _stock_tokenizer(from_gpt2)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    else:
        from eval.load import load_model, resolve_model_dir

        model, tokenizer = load_model(to_gpt2)
        if not isinstance(model, GPT2ReproForCausalLM):
            raise EvalInputError(f"{resolve_model_dir(to_gpt2)} is already a stock GPT-2 model "
                                 f"({type(model).__name__}): nothing to convert")
        save_stock_gpt2(model, out, tokenizer)
    return out


def convert_build_nanogpt(checkpoint: str | Path, out: str | Path) -> dict:
    """A build-nanogpt checkpoint (log/model_NNNNN.pt) -> our model folder (publish.nanogpt_checkpoint); returns
    what it recorded of the origin. Bad input raises eval.errors.EvalInputError (one line, exit 2)."""
    from eval.errors import EvalInputError
    from publish.nanogpt_checkpoint import write_model_folder

    out = _new_out(out)
    try:
        return write_model_folder(checkpoint, out)
    except ValueError as err:  # raised while reading the checkpoint, before anything is written
        raise EvalInputError(str(err)) from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-gpt2", metavar="PATH_OR_REPO", help="stock GPT-2 folder or Hub id -> our format")
    direction.add_argument("--to-gpt2", metavar="DIR",
                           help="our model folder, checkpoint folder or run folder (its newest verified checkpoint) "
                                "-> stock GPT-2 format")
    direction.add_argument("--from-build-nanogpt", metavar="FILE",
                           help="build-nanogpt checkpoint (log/model_NNNNN.pt) -> our format")
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    args = parser.parse_args(argv)

    from eval.errors import run_cli

    def _main(_argv):
        from eval.errors import EvalInputError

        given = next(value for value in (args.from_gpt2, args.to_gpt2, args.from_build_nanogpt) if value is not None)
        if not given.strip() or not args.out.strip():
            raise EvalInputError("a path given to convert_gpt2.py is empty: pass the model (or checkpoint) and --out")
        if args.from_build_nanogpt is not None:
            origin = convert_build_nanogpt(args.from_build_nanogpt, args.out)
            said = [f"{k.replace('_', ' ')} {origin[k]:.4f}" if isinstance(origin[k], float) else f"{k} {origin[k]}"
                    for k in ("step", "val_loss") if k in origin]
            said += [f"its log.txt in {origin['log']}"] if "log" in origin else []
            print(f"wrote {args.out}" + (f" (build-nanogpt {', '.join(said)})" if said else ""))
        else:
            print(f"wrote {convert(args.from_gpt2, args.to_gpt2, args.out)}")

    run_cli(_main)


if __name__ == "__main__":
    main()
