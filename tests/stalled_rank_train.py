"""train.py with one rank stalled: rank 1 sleeps before optimizer step 2, so the other rank waits in the
gradient all-reduce until the process group's timeout (--ddp_timeout) ends it. Used by tests/test_train_ddp.py.

    ACCELERATE_USE_CPU=1 python -m torch.distributed.run --standalone --nproc_per_node 2 \
        tests/stalled_rank_train.py STALL_SECONDS TRAIN_ARGS...
"""

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train  # noqa: E402
from training import loop  # noqa: E402

stall_s, train_args = float(sys.argv[1]), sys.argv[2:]
real_step = loop.optimizer_step
calls = 0


def stalled_step(*args, **kwargs):
    global calls
    calls += 1
    if os.environ.get("RANK") == "1" and calls == 2:
        time.sleep(stall_s)
    return real_step(*args, **kwargs)


loop.optimizer_step = stalled_step
sys.exit(train.main(train_args))
