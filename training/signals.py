"""SIGTERM / SIGINT turn into a request to stop, honoured by the loop at the end of the current step (with
several processes, the next one: the ranks agree on it first).

The handler only records the signal: the loop then agrees on it across ranks, commits a checkpoint and exits
with status 0 (what a scheduler's preemption notice expects). A second Ctrl-C while that is happening
raises KeyboardInterrupt as usual, for a user who really wants out now.

    with StopRequest() as stop:
        for step in ...:
            ...
            if stop.requested: save(); break
"""

import signal
import sys
import threading


class StopRequest:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, rank: int = 0, world: int = 1):
        self.signum = None
        self._previous = {}
        self.rank, self.world = rank, world

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is not None:  # a stop is already on its way (torchrun follows a second Ctrl-C with SIGTERM)
            return
        self.signum = signum
        name = signal.Signals(signum).name
        if self.world == 1:
            print(f"\nreceived {name}: will checkpoint when this step ends and exit (Ctrl-C again to abort without a "
                  "checkpoint)", file=sys.stderr, flush=True)
            return
        # Every rank a launcher forwards the signal to says it: named by its rank. A rank left waiting in a collective
        # for a process that died (NCCL) never reaches the next step; the launcher ends it. A terminal's second
        # Ctrl-C reaches the launcher (torchrun starts the ranks in sessions of their own), which then sends SIGTERM:
        # it does not abort the checkpoint, so it is not offered here.
        print(f"\nreceived {name} on rank {self.rank} of {self.world}: will checkpoint when the next step ends (all "
              "ranks agree first) and exit; if another process has died, this one cannot: the launcher ends it, "
              "and the committed checkpoints stay intact", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False
