"""The in-loop evaluations: validation loss, HellaSwag and samples, logged to stdout, metrics.jsonl and the
tracker. Each runs without moving the training RNG streams, so a resumed run stays exact."""

import contextlib
import time
from typing import Optional

import torch

from training import fsdp, trackers
from training.accelerator import broadcast
from training.step import cpu_oom_as_oom


def resolve_hellaswag(setting: str, log=print) -> Optional[str]:
    """Path of the HellaSwag val jsonl, or None (with one line saying why and how to enable it). 'auto': as
    `python -m eval.hellaswag` finds it ($HELLASWAG_FILE, an earlier download, the Hub)."""
    from eval.errors import EvalInputError
    from eval.hellaswag_data import find_hellaswag_file

    if setting == "off":
        return None
    if setting != "auto":
        return setting
    try:
        return str(find_hellaswag_file("to enable it pass --hellaswag_file PATH/hellaswag_val.jsonl "
                                       "(or set HELLASWAG_FILE), or run once online"))
    except EvalInputError as err:
        log(f"HellaSwag skipped: {err}.")
        return None


class Evaluator:
    """Validation loss, HellaSwag and samples. Works with torch.compile on: val loss runs the compiled module
    (same shapes as training, one recompile for no_grad), HellaSwag and generation run the eager module that
    shares its weights (their shapes change with every example)."""

    def __init__(self, cfg, accelerator, tokenizer, log, context: int = 1024):
        self.cfg, self.acc, self.tok, self.log = cfg, accelerator, tokenizer, log
        self.hellaswag = None
        # Not scored in this run (never during it, not at the end): not looked for either, which downloaded it
        # from the Hub, tokenized 10,042 examples and said "HellaSwag skipped: ... to enable it" for nothing.
        never = cfg.hellaswag_every <= 0 and not cfg.eval_at_end
        # Found and read by the main process only, its rows sent to every rank: on several machines the file (a
        # download into the main machine's $HF_HOME, a relative path) exists where the main process runs, and a
        # rank of another machine that looked for it failed alone, without a message, and the launch with it.
        from eval.errors import EvalInputError
        from eval.hellaswag_data import read_hellaswag, rows_fingerprint

        path, examples, problem = None, None, None
        self.hellaswag_fingerprint = None  # which rows: the model card says if they are not the published set
        if accelerator.is_main_process:
            try:  # a problem is sent to every rank, which all refuse: raised here alone, the others would wait
                path = resolve_hellaswag("off" if never else cfg.hellaswag_file, log=log)
                if path:  # every row, read once: the fingerprint is of the whole file, the scorer gets the first ones
                    rows = read_hellaswag(path)
                    examples, self.hellaswag_fingerprint = rows[:cfg.hellaswag_limit], rows_fingerprint(rows)
            except EvalInputError as err:
                problem = str(err)
            except OSError as err:  # read_hellaswag says which file; this is for anything else the disk refuses
                problem = f"could not read {path or cfg.hellaswag_file} ({err.strerror or type(err).__name__})"
        path, examples, problem = broadcast(accelerator, (path, examples, problem))
        if problem:
            raise EvalInputError(problem)
        if path:
            from eval.hellaswag import HellaSwagScorer

            self.hellaswag = HellaSwagScorer(examples, tokenizer, max_length=min(1024, context))
            log(f"HellaSwag: {path} ({cfg.hellaswag_limit or 'all'} examples)")

    def _reduce(self, tensor):
        return self.acc.reduce(tensor, reduction="sum")

    @contextlib.contextmanager
    def _mode(self, model):
        was_training = model.training
        model.eval()
        # evaluation must not move the training RNG streams (or resume would no longer be exact)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with cpu_oom_as_oom(), torch.random.fork_rng(devices=devices), torch.no_grad(), self.acc.autocast():
                yield
        finally:
            model.train(was_training)

    def val_loss(self, model, step, metrics):
        from data.loader import val_batches, val_window_count
        from eval.val_loss import evaluate_val_loss

        cfg = self.cfg
        t0 = time.time()
        with self._mode(model):
            batch_size = cfg.val_batch_size or cfg.micro_batch_size
            batches = val_batches(cfg.data_dir, batch_size, cfg.seq_len,
                                  cfg.val_tokens, self.acc.process_index, self.acc.num_processes,
                                  pin_memory=self.acc.device.type == "cuda")
            if fsdp.is_fsdp(self.acc):  # every forward is collective: each rank runs as many as the busiest one
                n_windows = val_window_count(cfg.data_dir, cfg.seq_len, cfg.val_tokens)
                batches = fsdp.padded_val_batches(batches, n_windows, batch_size, self.acc.num_processes, cfg.seq_len)
            loss, n_tokens = evaluate_val_loss(model, batches, self._reduce)
        loss, n_tokens = float(loss), int(n_tokens)
        self.log(f"val step {step:>6} | val_loss {loss:.6f} | tokens {n_tokens:,} | {time.time() - t0:.1f}s")
        if metrics:
            metrics.write("val", step=step, val_loss=loss, val_tokens=n_tokens)
        self.acc.log({"val/loss": loss}, step=step)
        return loss

    def hellaswag_eval(self, model, step, metrics):
        if self.hellaswag is None:
            return None
        t0 = time.time()
        with self._mode(model):
            res = self.hellaswag.evaluate(model, batch_size=self.cfg.val_batch_size or self.cfg.micro_batch_size,
                                          rank=self.acc.process_index, world_size=self.acc.num_processes,
                                          reduce_fn=self._reduce)
        from eval.hellaswag import REFERENCE_GPT2_124M as ref

        self.log(f"hellaswag step {step:>6} | acc {res['acc']:.4f} | acc_norm {res['acc_norm']:.4f} | "
                 f"acc_tokennorm {res['acc_tokennorm']:.4f} | n {res['n']} | {time.time() - t0:.1f}s | "
                 f"OpenAI GPT-2 124M: acc_norm {ref['acc_norm']:.4f}, acc_tokennorm {ref['acc_tokennorm']:.4f}")
        if metrics:
            metrics.write("hellaswag", step=step, acc=res["acc"], acc_norm=res["acc_norm"],
                          acc_tokennorm=res["acc_tokennorm"], n=res["n"], data_fingerprint=self.hellaswag_fingerprint)
        self.acc.log({f"hellaswag/{name}": res[name] for name in ("acc_norm", "acc", "acc_tokennorm")}, step=step)
        return res

    def samples(self, model, step, metrics):
        from eval.sample import generate_samples

        cfg = self.cfg
        if cfg.num_samples <= 0:
            return []
        with self._mode(model):  # every rank generates (an FSDP forward is collective); rank 0 reports
            texts = generate_samples(model, self.tok, cfg.sample_prompt, num_samples=cfg.num_samples,
                                     max_new_tokens=cfg.sample_max_new_tokens, top_k=cfg.sample_top_k,
                                     seed=cfg.seed + step)
        for i, text in enumerate(texts):
            self.log(f"sample {i} step {step}: {text!r}")
        if metrics:
            metrics.write("sample", step=step, prompt=cfg.sample_prompt, texts=list(texts))
        trackers.log_texts(self.acc, {f"samples/{i}": text for i, text in enumerate(texts)}, step)
        return texts
