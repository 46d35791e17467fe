"""Train GPT-2 (124M recipe, or the small demo) with Accelerate: one CPU to many GPUs, resumable to the bit.

    python train.py --config configs/demo.yaml                                  # one process
    accelerate launch --config_file accelerate_config.yaml train.py --config configs/gpt2_124m_fineweb_edu.yaml
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml train.py --config ... --key value ...

Flags override the preset (`python train.py --help` lists every field). The loop lives in training/loop.py.
"""

import sys

from training.run_config import ConfigError, load_run_config


def main(argv=None) -> int:
    from eval.errors import permission_message

    try:
        cfg = load_run_config(argv)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    except PermissionError as err:  # the preset, or a data/output folder this user may not read
        print(f"invalid run config:\n  - {permission_message(err)}", file=sys.stderr)
        return 2
    from training.loop import train

    try:
        return train(cfg)
    except KeyboardInterrupt:  # Ctrl-C before the loop's handler is installed, or a second one (training/signals.py)
        print(interrupted_message(cfg.output_dir), file=sys.stderr, flush=True)
        return 130
    except PermissionError as err:  # a file met later (a shard, a HellaSwag copy): one line, not a traceback, and
        # exit 1 as an unexpected error (a checkpoint that cannot be written is the loop's own exit 5)
        print(f"error: {permission_message(err)}; {what_was_kept(cfg.output_dir)}", file=sys.stderr, flush=True)
        return 1


def interrupted_message(output_dir) -> str:
    """What an abort kept, read from disk: a second Ctrl-C may land in the middle of a checkpoint's commit, which
    then may or may not have finished (the line once said the step in progress was lost when its commit was done)."""
    return f"interrupted (Ctrl-C): what was in progress is not saved; {what_was_kept(output_dir)}"


def what_was_kept(output_dir) -> str:
    from training.checkpoint import committed_checkpoints

    try:
        newest = committed_checkpoints(output_dir)[-1:]
    except OSError:
        newest = []
    return (f"the committed checkpoints are intact (newest: {newest[0].name}; continue with --resume auto)" if newest
            else "no checkpoint was committed")


if __name__ == "__main__":
    sys.exit(main())
