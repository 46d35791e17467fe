"""Train GPT-2 (124M recipe, or the small demo) with Accelerate: one CPU to many GPUs, resumable to the bit.

    python train.py --config configs/demo.yaml                                  # one process
    accelerate launch --config_file accelerate_config.yaml train.py --config configs/gpt2_124m_fineweb_edu.yaml
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml train.py --config ... --key value ...

Flags override the preset (`python train.py --help` lists every field). The loop lives in training/loop.py.
"""

import sys

from training.run_config import ConfigError, load_run_config


def main(argv=None) -> int:
    try:
        cfg = load_run_config(argv)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    from training.loop import train

    try:
        return train(cfg)
    except KeyboardInterrupt:  # Ctrl-C before the loop's handler is installed, or a second one (training/signals.py)
        print("interrupted (Ctrl-C): what was in progress is not checkpointed; committed checkpoints are intact "
              "(continue with --resume auto)", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
