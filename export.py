"""Export a training run as a Hub-ready model folder (weights, config, code, tokenizer, generation config,
model card with results and curves), and optionally push it to the Hugging Face Hub.

    python export.py runs/124M --out export/124M                           # our format (trust_remote_code)
    python export.py runs/124M --out export/124M-gpt2 --format gpt2        # stock GPT2LMHeadModel, no remote code
    python export.py runs/124M --out export/hub --push-to-hub me/gpt2repro-124M --private --dry-run   # look first
    python export.py runs/124M --out export/hub --push-to-hub me/gpt2repro-124M --private --overwrite # then push

A dry run writes the folder too, so the push after it replaces that export (--overwrite); without --overwrite an
--out that holds an earlier export is refused.

RUN_OR_CHECKPOINT: a run folder (its newest complete checkpoint whose checksums verify; a damaged one is skipped
with a warning), a checkpoint folder (runs/124M/checkpoints/step_00019073) or a model folder written by
save_pretrained. The push uses the token from HF_TOKEN or `hf auth login`; `--dry-run` lists exactly the files
that would be uploaded and sends nothing.
Details: publish/export_model.py, publish/model_card.py, publish/hub.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors import SafetensorError

from eval.errors import cli_output, full_disk, hyphenated, permission_message
from publish.export_model import DTYPES, EXPORT_FILE_PATTERNS, FORMATS, export_model
from publish.hub import PublishError, plan_upload, push, push_blocker, token_available
from publish.model_card import load_lm_eval_results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python export.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="run folder, checkpoint folder or model folder")
    parser.add_argument("--out", required=True, help="folder to write (must be new or empty unless --overwrite)")
    parser.add_argument("--format", choices=FORMATS, default="gpt2repro",
                        help="gpt2repro: our classes + code (trust_remote_code); gpt2: stock GPT2LMHeadModel "
                             "(default: %(default)s)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                        help="dtype of model.safetensors (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier export "
                        "(refused if it also holds files no export writes, e.g. eval_results/: they would be deleted)")
    card = parser.add_argument_group("model card")
    card.add_argument("--name", help="model name in the card (default: the name of the --push-to-hub repo, else of "
                      "the --out folder)")
    card.add_argument("--dataset", action="append", help="Hub dataset id of the training data (repeatable; "
                      "default: guessed from the run's data_dir)")
    card.add_argument("--license", default="mit", help="Hub license id of the weights in the card (default mit, as "
                      "OpenAI's GPT-2; the training data keeps its own terms, e.g. FineWeb-Edu's ODC-By)")
    card.add_argument("--base-model", help="Hub id of the model training continued from (default: from init_from)")
    card.add_argument("--lm-eval-results", metavar="JSON",
                      help="lm-eval results file of a HellaSwag run on this export: reported in the card")
    hub = parser.add_argument_group("push")
    hub.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hub model repo")
    hub.add_argument("--private", action="store_true", help="create the repo private; an existing repo keeps its "
                     "visibility, so a public one is refused (nothing uploaded)")
    hub.add_argument("--revision", help="branch to push to (created from main if missing; default main)")
    hub.add_argument("--commit-message", help="default: 'Upload <name> (step N, format, dtype)'")
    hub.add_argument("--dry-run", action="store_true", help="list what would be uploaded; send nothing")
    args = parser.parse_args(hyphenated(argv))  # --push_to_hub works too, as train.py's flag style
    if (args.private or args.dry_run or args.revision or args.commit_message) and not args.push_to_hub:
        parser.error("--private / --dry-run / --revision / --commit-message go with --push-to-hub REPO_ID")
    if args.push_to_hub:  # before the export, not after minutes of it
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(args.push_to_hub)
        except ValueError as err:
            parser.error(f"--push-to-hub {args.push_to_hub!r} is not a Hub repo id ('namespace/name'): {err}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    blocker = push_blocker() if args.push_to_hub and not args.dry_run else None
    if blocker:  # before the export, not after it: nothing could be pushed
        print(f"error: cannot push to {args.push_to_hub}: {blocker}; nothing was exported or uploaded (--dry-run "
              "needs neither)", file=sys.stderr)
        return 2
    if args.name is None and args.push_to_hub:  # the card's title is the name the model is published under
        args.name = args.push_to_hub.split("/")[-1]
    try:
        lm_eval = load_lm_eval_results(args.lm_eval_results) if args.lm_eval_results else None
    except (OSError, ValueError) as err:  # a bare "[Errno 2] ..." did not say which argument it was about
        why = (f"{args.lm_eval_results}: {err.strerror or err}" if isinstance(err, OSError) else err)  # ValueError:
        print(f"error: --lm-eval-results {why}; nothing was exported", file=sys.stderr)  # names the file itself
        return 2
    try:
        result = export_model(
            args.source, args.out, format=args.format, dtype=args.dtype, model_name=args.name,
            repo_id=args.push_to_hub, revision=args.revision, datasets=args.dataset, license=args.license,
            base_model=args.base_model,
            lm_eval_results=lm_eval, overwrite=args.overwrite,
        )
    except PermissionError as err:  # the source's files, or --out's folder, not readable / writable by this user
        print(f"error: {permission_message(err)}; nothing was exported", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        full = full_disk(err)
        if full or isinstance(err, SafetensorError):
            kept = f"; the earlier export at {args.out} is unchanged" if Path(args.out).is_dir() else ""
            print(f"error: could not write the export in {Path(args.out).parent} ({str(err).splitlines()[0]}); its "
                  f"staged files were removed{kept}"
                  + (": free some space or choose another --out" if full else ""), file=sys.stderr)
            return 2
        print(f"error: {err}", file=sys.stderr)
        return 2
    step = f"step {result.step}" if result.step is not None else "model folder"
    print(f"exported {step} as {args.format} ({args.dtype}) to {result.out_dir}: {len(result.files)} files; "
          f"reload check: max |log-prob diff| {result.max_logprob_diff:.2e}")
    if not args.push_to_hub:
        return 0

    message = args.commit_message or f"Upload {args.name or result.out_dir.name} ({step}, {args.format}, {args.dtype})"
    try:
        plan = plan_upload(result.out_dir, args.push_to_hub, private=args.private, revision=args.revision,
                           commit_message=message, delete_patterns=list(EXPORT_FILE_PATTERNS))
        if args.dry_run:
            print("dry run: nothing is sent. This push would upload:")
            print(plan.describe(token_found=token_available()))
            return 0
        url = push(plan)
    except PublishError as err:
        print(f"error: {err}. The exported folder is complete at {result.out_dir}.", file=sys.stderr)
        return 1
    print(f"pushed {len(plan.files)} files to {args.push_to_hub}: {url}")
    return 0


if __name__ == "__main__":
    with cli_output():
        sys.exit(main())
