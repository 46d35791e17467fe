"""data.prefetch.Prefetcher: the same batches as the loader it wraps, and a state that resumes exactly at the
first batch handed out after it (not after the ones made ahead)."""

import threading

import pytest
import torch

from data.loader import TrainBatches
from data.prefetch import Prefetcher


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import json
    import random

    from data.prepare import prepare

    root = tmp_path_factory.mktemp("prefetch")
    rng = random.Random(1)
    with open(root / "docs.jsonl", "w") as f:
        for _ in range(60):
            f.write(json.dumps({"text": " ".join(rng.choice("abcdefgh") * rng.randint(1, 4)
                                                 for _ in range(rng.randint(20, 60)))}) + "\n")
    prepare(str(root / "docs.jsonl"), root / "data", val_tokens=256, shard_tokens=4096, num_proc=1, progress=False)
    return root / "data"


def test_same_batches_in_the_same_order_across_epochs(data_dir):
    bare = TrainBatches(data_dir, 4, 16, seed=3)
    with Prefetcher(TrainBatches(data_dir, 4, 16, seed=3), depth=3) as ahead:
        for _ in range(3 * bare.windows_per_epoch // 4 + 5):  # more than two epochs
            (x1, y1), (x2, y2) = next(bare), next(ahead)
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_state_is_that_of_the_batches_taken_and_resumes_exactly(data_dir):
    with Prefetcher(TrainBatches(data_dir, 4, 16, seed=3), depth=4) as ahead:
        assert ahead.state_dict()["windows_consumed"] == 0
        for _ in range(7):
            next(ahead)
        threading.Event().wait(0.2)  # let the thread run ahead: its batches must not count
        state = ahead.state_dict()
        assert state["windows_consumed"] == 28
        following = [next(ahead) for _ in range(5)]
    resumed = TrainBatches(data_dir, 4, 16, seed=3)
    resumed.load_state_dict(state)
    for x, y in following:
        rx, ry = next(resumed)
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_a_loader_error_reaches_the_consumer_and_a_finite_loader_ends(data_dir):
    class Broken:
        def __init__(self):
            self.n = 0

        def state_dict(self):
            return {"n": self.n}

        def __next__(self):
            self.n += 1
            if self.n == 3:
                raise ValueError("shard 7 is truncated")
            return self.n

    broken = Prefetcher(Broken())
    assert [next(broken), next(broken)] == [1, 2]
    with pytest.raises(ValueError, match="shard 7 is truncated"):
        next(broken)
    broken.close()
    assert list(Prefetcher(iter_with_state([1, 2, 3]))) == [1, 2, 3]


def test_close_stops_the_thread(data_dir):
    ahead = Prefetcher(TrainBatches(data_dir, 4, 16), depth=2)
    next(ahead)
    ahead.close()
    assert not ahead._thread.is_alive()
    with pytest.raises(ValueError, match="depth must be >= 1"):
        Prefetcher(TrainBatches(data_dir, 4, 16), depth=0)


class iter_with_state:  # noqa: N801 - used like a function
    def __init__(self, items):
        self._it = iter(items)

    def state_dict(self):
        return {}

    def __next__(self):
        return next(self._it)


def test_a_failure_setting_up_the_thread_reaches_the_consumer(data_dir, monkeypatch):
    """The producer sets its CUDA device inside its error handling: a failure there must surface at next()
    with its own message, not as a generic 'thread stopped' (seen on an H200 with Accelerate's index-less
    `cuda` device, now resolved to an index in the caller's thread)."""
    def refuse(index):
        raise RuntimeError(f"cannot use GPU {index}")

    monkeypatch.setattr(torch.cuda, "set_device", refuse)
    ahead = Prefetcher(TrainBatches(data_dir, 4, 16), device=torch.device("cuda", 3))
    with pytest.raises(RuntimeError, match="cannot use GPU 3"):
        next(ahead)
    ahead.close()
