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

    def __init__(self):
        self.signum = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
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
