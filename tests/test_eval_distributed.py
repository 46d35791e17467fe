"""Must-show 3: two CPU processes (torch.distributed, gloo) give the same HellaSwag totals as one."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    sys.path.insert(0, os.environ["REPO_ROOT"])
    sys.path.insert(0, os.path.join(os.environ["REPO_ROOT"], "tests"))
    from data.tokenizer import gpt2_tokenizer
    from eval.hellaswag import HellaSwagScorer
    from test_eval_hellaswag import tiny_model

    torch.set_num_threads(1)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    reduce_fn = None
    if world_size > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)

        def reduce_fn(t):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            return t

    scorer = HellaSwagScorer.from_file(sys.argv[1], gpt2_tokenizer(), limit=int(sys.argv[2]), max_length=128)
    lls = scorer.loglikelihoods(tiny_model(), batch_size=8, rank=rank, world_size=world_size, reduce_fn=reduce_fn)
    out = {"metrics": scorer.metrics(lls), "lls": {k: v.tolist() for k, v in lls.items()}}
    with open(sys.argv[3] + f".{rank}", "w") as fh:
        json.dump(out, fh)
    if world_size > 1:
        dist.destroy_process_group()
    """
)


def _run(script, data, limit, out, world_size, port):
    env = dict(os.environ, REPO_ROOT=REPO_ROOT, PYTHONPATH=REPO_ROOT)
    procs = []
    for rank in range(world_size):
        env_r = dict(env, RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(script), str(data), str(limit), str(out)], env=env_r,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        try:
            output, _ = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("distributed HellaSwag worker timed out")
        assert p.returncode == 0, output
    return [json.loads(open(f"{out}.{rank}").read()) for rank in range(world_size)]


def test_two_processes_equal_one(tmp_path, shared_data):
    data = shared_data("hellaswag/hellaswag_val.jsonl")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (single,) = _run(script, data, 30, tmp_path / "one", 1, port)
    two = _run(script, data, 30, tmp_path / "two", 2, port)
    assert two[0] == two[1]  # every rank holds the totals
    assert two[0]["metrics"] == single["metrics"]
    assert two[0]["lls"] == single["lls"]  # bit-identical: each batch is the same forward in both layouts
    assert single["metrics"]["n"] == 30
