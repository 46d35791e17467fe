"""SIGTERM / SIGINT turn into a request to stop, honoured by the loop at the end of the current step (with
several processes, the next one: the ranks agree on it first).

The handler only records the signal: the loop then agrees on it across ranks, commits a checkpoint and exits
with status 0 (what a scheduler's preemption notice expects). A second Ctrl-C while that is happening
raises KeyboardInterrupt as usual, for a user who really wants out now. Under a launcher (torchrun, accelerate
launch) one Ctrl-C reaches each rank twice: the terminal sends SIGINT to every process of the job, and the launcher
forwards its own copy. A repeat within DUPLICATE_S of the first is that copy, not a second Ctrl-C.

    with StopRequest() as stop:
        for step in ...:
            ...
            if stop.requested: save(); break
"""

import os
import signal
import sys
import threading
import time

# A launcher forwards the SIGINT it got from the terminal within milliseconds; a person pressing Ctrl-C again to
# get out takes longer, and can press it once more.
DUPLICATE_S = 2.0


def launched() -> bool:
    """Started by torchrun / accelerate launch (which forward a terminal's SIGINT to the ranks that got it too)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


class StopRequest:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._at = None  # time.monotonic() of the first signal
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            if self.signum == signal.SIGINT and launched() and time.monotonic() - self._at < DUPLICATE_S:
                return  # the launcher's copy of the Ctrl-C this rank already got from the terminal
            raise KeyboardInterrupt
        self.signum, self._at = signum, time.monotonic()
        print(f"\nreceived {signal.Signals(signum).name}: will checkpoint when this step ends (with several "
              "processes, the next one: all ranks agree first) and exit (Ctrl-C again to abort without a checkpoint)",
              file=sys.stderr, flush=True)

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
