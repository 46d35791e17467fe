"""Errors for bad input to eval/ (missing files, wrong model folders) and the CLI wrapper that prints them.

Every eval/ command runs its `main` through `run_cli`, so a user who points it at a wrong path reads one line
that says what is wrong and what to do, not a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse `type=` for counts and sizes: an integer >= 1 (0 is an error, never "the default")."""
    return _int_at_least(text, 1)


def seed_int(text: str) -> int:
    """argparse `type=` for a seed: torch.manual_seed's range (a larger one was 'Overflow when unpacking long long')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not -2**63 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [-2**63, 2**63) (torch.manual_seed's range), got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse `type=` for counts that may be 0 (lm-eval's --num-fewshot)."""
    return _int_at_least(text, 0)


def positive_int_or_auto(text: str) -> int | str:
    """argparse `type=` for lm-eval's batch size: an integer >= 1 or 'auto'."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {text!r}") from None


@contextlib.contextmanager
def cli_output():
    """What a command line prints besides its own lines: this project's warnings (a damaged checkpoint skipped, a
    file left out of the card) as one `warning: ...` line, without Python's source location; other warnings as
    usual; no transformers progress bars (a 'Loading weights' bar per model and 'Writing model shards').

    Only the text of a printed warning changes (`warnings.formatwarning`): a warning that is recorded instead
    (pytest.warns, catch_warnings(record=True)) is still recorded. On exit the previous formatter and progress-bar
    state come back (bars that were off, e.g. HF_HUB_DISABLE_PROGRESS_BARS=1, stay off)."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    default = warnings.formatwarning

    def formatted(message, category, filename, lineno, line=None):
        if category is UserWarning and _from_this_project(filename):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    bars_on, hub_bars_off = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    warnings.formatwarning = formatted
    if bars_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        warnings.formatwarning = default
        if bars_on:
            hf_logging.enable_progress_bar()
            if hub_bars_off:
                hub_utils.disable_progress_bars()


def _from_this_project(filename: str) -> bool:
    """Whether a warning comes from this repository's code, not from a library installed in a virtual environment
    inside it (scripts/setup.sh makes `.venv` in the repository root)."""
    path = Path(filename).resolve()
    return (path.is_file() and path.is_relative_to(REPO_ROOT) and "site-packages" not in path.parts
            and not path.is_relative_to(Path(sys.prefix).resolve()))


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run `main(argv)` under `cli_output()`; an `EvalInputError` (or a file this user may not read or write)
    becomes `error: <message>` on stderr and exit status 2."""
    try:
        with cli_output():
            main(argv)
    except (EvalInputError, PermissionError) as err:
        print(f"error: {permission_message(err) if isinstance(err, PermissionError) else err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        print(f"error: {storage_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None


def full_disk(err: BaseException) -> bool:
    """Whether a write failed for want of space: ENOSPC / EDQUOT, or safetensors' own error for it
    ("IoError(Os { code: 28, kind: StorageFull, ... })")."""
    from safetensors import SafetensorError

    return (getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
            or isinstance(err, SafetensorError) and ("code: 28" in str(err) or "StorageFull" in str(err)))


def storage_message(err: OSError) -> str:
    """One line for a write the file system refused as a whole (full, over quota, read-only), with the free space."""
    where = Path(err.filename) if err.filename else None
    free = ""
    if where is not None:
        folder = next((p for p in (where, *where.parents) if p.exists()), None)
        if folder is not None:
            free = f" ({shutil.disk_usage(folder).free / 1e9:.2f} GB free there)"
    if err.errno == errno.EROFS:
        return f"could not write {where or 'a file'}: {err.strerror}: choose a location on a writable file system"
    return f"could not write {where or 'a file'}: {err.strerror}{free}: free some space or choose another location"


def permission_message(err: PermissionError) -> str:
    """One line for a file or folder this user may not read or write (a traceback said no more), e.g. `permission
    denied: data/val_000000.npy: check that this user can read it (and write it, for an output): ls -l shows its
    modes`."""
    where = err.filename or "a file"
    return (f"permission denied: {where}: check that this user can read it (and write it, for an output): "
            "ls -l shows its modes")
