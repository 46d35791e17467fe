"""Sampling: `generate_samples` for train.py, and a command that puts several models side by side.

    python -m eval.sample --model runs/demo --model openai-community/gpt2 --model runs/other \
        [--prompt "Hello, I'm a language model,"] [--num-samples 4] [--max-new-tokens 32] \
        [--top-k 50] [--temperature 1.0] [--seed 42]

Each model gets the same prompt, settings and seed. Models are export/checkpoint/run folders or Hub ids.
"""

from __future__ import annotations

import argparse

import torch

from eval.errors import EvalInputError, hyphenated, positive_int, run_cli, seed_int


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The token ids generation starts from: the prompt's, or for an empty prompt one end-of-text token (the start
    of a new document, as in training: unconditional samples)."""
    if prompt:
        return tokenizer(prompt)["input_ids"]
    if tokenizer.eos_token_id is None:
        raise ValueError("an empty prompt needs a tokenizer with an end-of-text token to start from")
    return [tokenizer.eos_token_id]


@torch.no_grad()
def generate_samples(model, tokenizer, prompt: str = "Hello, I'm a language model,", num_samples: int = 4,
                     max_new_tokens: int = 32, top_k: int = 50, temperature: float = 1.0, seed: int = 42) -> list[str]:
    """`num_samples` continuations of `prompt` (prompt included in each string) with `model.generate`
    (top-k sampling, KV cache). An empty prompt gives unconditional samples: generation starts from the
    end-of-text token (a document boundary, as in training), which is left out of the returned strings. Reproducible: a private `torch.Generator`-seeded RNG state is used and the
    global RNG is restored afterwards, so training randomness is untouched.

    Pass an uncompiled module. With a torch.compile'd training model pass `model._orig_mod` (the same weights;
    generate's growing shapes would otherwise recompile), and with DDP `accelerator.unwrap_model(model)`.
    """
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError("num_samples and max_new_tokens must be >= 1")
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (for greedy decoding use top_k=1: --top-k 1 on the command line)")
    model = getattr(model, "_orig_mod", model)
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=device)  # (1, T)
    ids = ids.expand(num_samples, -1)  # (n, T): same prompt, no padding needed
    context = getattr(model.config, "n_positions", None)
    if context is not None and ids.shape[1] + max_new_tokens > context:
        room = context - ids.shape[1]
        fix = f"generate at most {room} new tokens" if room >= 1 else "shorten the prompt"
        raise ValueError(f"the prompt ({ids.shape[1]} tokens) + {max_new_tokens} new tokens exceed the model's "
                         f"context of {context} tokens: {fix}")
    pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=top_k,
                temperature=temperature, max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=None,
            )  # (n, T + max_new_tokens)
        finally:
            model.train(was_training)
    return tokenizer.batch_decode(out if prompt else out[:, 1:], skip_special_tokens=False)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m eval.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="repeat to compare models side by side")
    parser.add_argument("--prompt", default="Hello, I'm a language model,",
                        help="text every sample continues ('' = unconditional, from <|endoftext|>) (default: %(default)r)")
    parser.add_argument("--num-samples", type=positive_int, default=4, help="samples per model (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=32, help="tokens generated per sample (default: %(default)s)")
    parser.add_argument("--top-k", type=positive_int, default=50, help="sample from the k likeliest tokens; 1 = greedy "
                                                              "(default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=1.0, help="> 0; lower is more conservative "
                                                                       "(default: %(default)s)")
    parser.add_argument("--seed", type=seed_int, default=42, help="sampling seed (default: %(default)s)")
    args = parser.parse_args(hyphenated(argv))  # underscore spellings too (--batch_size)

    from eval.load import load_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {}
    for path in args.model:
        model, tokenizer = load_model(path)
        try:
            texts = generate_samples(model.to(device), tokenizer, args.prompt, args.num_samples, args.max_new_tokens,
                                     args.top_k, args.temperature, args.seed)
        except ValueError as err:
            raise EvalInputError(str(err)) from None
        results[path] = texts
        print(f"=== {path}")
        for i, text in enumerate(texts):
            print(f"[{i}] {text!r}")
        del model
    return results


if __name__ == "__main__":
    run_cli(main)
