"""Published numbers our plots and model cards compare against (source: shared/docs/REFERENCE.md).

HellaSwag numbers depend on the scorer, so every reference is filed under the scorer that produced it and is
only ever drawn next to a curve from the same scorer:
    lm-eval        lm-evaluation-harness `hellaswag`: preprocessed query, acc_norm = log-prob / length in characters
                   (our metrics.jsonl `acc` / `acc_norm`)
    build-nanogpt  Karpathy's in-loop scorer: raw ctx, acc_norm = mean log-prob per token
                   (our metrics.jsonl `acc_tokennorm`; the `hella` lines of a build-nanogpt log.txt)
The GPT-3 paper reports one HellaSwag number for GPT-3 small (0.337) with its own protocol; build-nanogpt draws
it as a line on its plot and so do we, under both scorers, labelled as the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORER_LM_EVAL = "lm-eval"
SCORER_BUILD_NANOGPT = "build-nanogpt"
SCORERS = (SCORER_LM_EVAL, SCORER_BUILD_NANOGPT)

SCORER_DESCRIPTIONS = {
    SCORER_LM_EVAL: "lm-evaluation-harness `hellaswag` task (0-shot; acc_norm normalises by length in characters)",
    SCORER_BUILD_NANOGPT: "build-nanogpt in-loop scorer (0-shot, raw context; acc_norm normalises by token count)",
}


@dataclass(frozen=True)
class Reference:
    label: str
    value: float


# acc_norm under each scorer
HELLASWAG_ACC_NORM = {
    SCORER_LM_EVAL: (
        Reference("OpenAI GPT-2 124M", 0.3114),
        Reference("GPT-3 small 124M (paper)", 0.337),
    ),
    SCORER_BUILD_NANOGPT: (
        Reference("OpenAI GPT-2 124M", 0.2955),
        Reference("GPT-3 small 124M (paper)", 0.337),
    ),
}
# acc (no length normalisation) of OpenAI GPT-2 124M under each scorer
HELLASWAG_ACC = {
    SCORER_LM_EVAL: Reference("OpenAI GPT-2 124M", 0.2892),
    SCORER_BUILD_NANOGPT: Reference("OpenAI GPT-2 124M", 0.2859),
}
# OpenAI GPT-2 124M on the FineWeb-Edu val shard as build-nanogpt splits it (its plot's horizontal line)
VAL_LOSS = Reference("OpenAI GPT-2 124M (FineWeb-Edu val)", 3.2924)
HELLASWAG_EXAMPLES = 10042  # the validation set every HellaSwag reference here is scored on


def val_loss_reference_applies(datasets) -> bool:
    """VAL_LOSS is measured on FineWeb-Edu: the loss plot draws it, and the card mentions it, only for that data."""
    return any("fineweb-edu" in d for d in datasets)
