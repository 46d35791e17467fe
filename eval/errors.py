"""Errors for bad input to eval/ (missing files, wrong model folders) and the CLI wrapper that prints them.

Every eval/ command runs its `main` through `run_cli`, so a user who points it at a wrong path reads one line
that says what is wrong and what to do, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class EvalInputError(ValueError):
    """Bad input from the user: the message names the file and says what to do."""


def hyphenated(argv: list[str] | None) -> list[str]:
    """`--max_new_tokens 8` -> `--max-new-tokens 8`: the eval commands take train.py's underscore spelling too
    (their options are hyphenated; option values are left alone)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    out = []
    for token in argv:
        if token.startswith("--") and not token.startswith("---"):
            name, eq, value = token.partition("=")
            token = name.replace("_", "-") + eq + value
        out.append(token)
    return out


def positive_int(text: str) -> int:
    """argparse `type=` for counts and sizes: an integer >= 1 (0 is an error, never "the default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse `type=` for counts that may be 0 (lm-eval's --num-fewshot)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_int_or_auto(text: str) -> int | str:
    """argparse `type=` for lm-eval's batch size: an integer >= 1 or 'auto'."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {text!r}") from None


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run `main(argv)`; an `EvalInputError` becomes `error: <message>` on stderr and exit status 2."""
    try:
        main(argv)
    except EvalInputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
