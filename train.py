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

    return train(cfg)


if __name__ == "__main__":
    sys.exit(main())
