"""train.py under Accelerate's FSDP2 path on CPU processes (gloo), for tests; launched by
`accelerate launch --config_file configs/accelerate/fsdp2.yaml ... tests/fsdp_cpu_train.py TRAIN_ARGS`.

Accelerate (1.15) turns a launch into DistributedType.FSDP only from a GPU-type distributed mode; on CPU it stays
MULTI_CPU and FSDP is never applied. This wrapper changes only that decision: processes start as MULTI_CPU
(gloo group, CPU device), then the state switches to FSDP with the plugin Accelerate built from the launcher's
FSDP_* settings, as accelerate/state.py does for MULTI_GPU. Everything after it is Accelerate's real FSDP2
preparation (fully_shard per GPT2ReproBlock) and our real training loop.
"""

import os
import sys

os.environ["ACCELERATE_USE_CPU"] = "1"

from accelerate.state import AcceleratorState, PartialState  # noqa: E402
from accelerate.utils import DistributedType  # noqa: E402

_accelerate_init = AcceleratorState.__init__


def _init_as_fsdp(self, *args, fsdp_plugin=None, **kwargs):
    _accelerate_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)  # as Accelerate does (keeps an explicit policy)
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type


AcceleratorState.__init__ = _init_as_fsdp

sys.path.insert(0, os.getcwd())
import train  # noqa: E402

if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
