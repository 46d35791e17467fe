"""One session of a run (one launch of train.py, fresh or resumed), as this process sees it: the Accelerator,
this process's rank, log lines, refusals, and the exit codes a session ends with.

A refusal is a start-up problem that stops the session before it trains: every rank returns EXIT_CONFIG at
the same point (each refusal follows a collective call, or is found from what every rank has alike), and only
the main process prints the messages, under a heading ("invalid run config", "cannot start", "cannot resume").
"""

import sys
from dataclasses import dataclass, field
from typing import Any

from training.accelerator import make_accelerator
from training.run_config import ConfigError, RunConfig

# 0 done (or stopped cleanly by SIGTERM/SIGINT after a checkpoint), 2 bad config or incompatible resume (nothing
# written), 3 non-finite loss or grad norm, 4 out of memory, 5 a checkpoint could not be written (training/loop.py)
EXIT_OK, EXIT_CONFIG, EXIT_NONFINITE, EXIT_OOM, EXIT_SAVE = 0, 2, 3, 4, 5


@dataclass
class Refusal:
    """Why the session cannot start: the messages (one per problem) and the heading they are printed under."""

    errors: list[str]
    heading: str = "invalid run config"


@dataclass
class Session:
    accelerator: Any  # accelerate.Accelerator, made from the run config
    main: bool = field(init=False)  # the main process (global rank 0): the one that prints and writes run files
    world: int = field(init=False)  # processes in the launch
    rank: int = field(init=False)  # this process's global rank

    def __post_init__(self):
        self.main = self.accelerator.is_main_process
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index

    @classmethod
    def start(cls, cfg: RunConfig) -> "Session":
        return cls(make_accelerator(cfg))

    def log(self, msg: str) -> None:
        """A line on stdout, main process only; safe to call alongside the tqdm bar."""
        if self.main:
            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stdout)
            sys.stdout.flush()

    def refuse(self, refusal: Refusal) -> int:
        """Print the refusal (main process) and return the exit code every rank returns with it."""
        if self.main:
            print(str(ConfigError(refusal.errors, refusal.heading)), file=sys.stderr, flush=True)
        return EXIT_CONFIG
