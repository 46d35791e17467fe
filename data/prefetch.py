"""Make training batches ahead of time in a background thread, without losing exact resume.

    batches = Prefetcher(TrainBatches(...), depth=2, device=accelerator.device)
    x, y = next(batches)          # waits only if the thread is behind
    state = batches.state_dict()  # the position after the batches taken so far, not those made ahead
    batches.close()

Why: after each optimizer step the training loop waits for the GPU (one host sync, for the loss and the
non-finite check); the GPU then idles until the CPU has gathered the next batch from the memmap and queued the
next kernels. With the batch already made (and pinned) that gap is only the kernel launches. The gathering is
numpy/torch copying, which runs without the GIL, so one thread is enough.

Order and content are exactly those of the wrapped loader: one producer, FIFO queue. Each batch travels with
the loader's `state_dict()` taken right after it was made, and `state_dict()` here returns the state of the
last batch handed out, so a checkpoint resumes at the first batch the model has not seen.
"""

from __future__ import annotations

import queue
import threading

import torch


class Prefetcher:
    """Iterator over `loader` (an iterator with `state_dict()`), `depth` batches ahead, in a daemon thread."""

    def __init__(self, loader, depth: int = 2, device: torch.device | None = None):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.loader = loader
        self._state = loader.state_dict()  # before the first batch is taken
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        # The current CUDA device is per thread, so the producer sets it; Accelerate's single-GPU device is
        # `cuda` without an index, which set_device refuses: resolve the index here, in the caller's thread.
        self._cuda_index = None
        if device is not None and device.type == "cuda":
            self._cuda_index = device.index if device.index is not None else torch.cuda.current_device()
        self._thread = threading.Thread(target=self._produce, name="batch-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            if self._cuda_index is not None:  # else pinning would create a context on GPU 0 from every rank
                torch.cuda.set_device(self._cuda_index)
            while not self._stop.is_set():
                batch = next(self.loader)
                if not self._put((batch, self.loader.state_dict(), None)):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((None, None, err))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            try:
                batch, state, err = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    try:  # it may have put its last item (an error) just before stopping
                        batch, state, err = self._queue.get_nowait()
                        break
                    except queue.Empty:
                        raise RuntimeError("the batch prefetch thread stopped without a batch or an error") from None
        if err is not None:
            raise err
        self._state = state
        return batch

    def state_dict(self) -> dict:
        return self._state

    def close(self) -> None:
        """Stop the thread (the batches made ahead are dropped; the state is unaffected)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
