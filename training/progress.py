"""What the loop reports after each step (the step line, metrics.jsonl, the trackers, the progress bar) and the
pace behind it (tokens/s, MFU, the ETA); at the end of a completed run, its summary."""

import sys
import time

import torch

from training.metrics import FLOPS_FORMULA, mfu, step_line
from training.optim import lr_at
from training.preparation import Prepared
from training.run_config import RunConfig
from training.session import Session


class Progress:
    def __init__(self, session: Session, cfg: RunConfig, prepared: Prepared, metrics):
        from tqdm.auto import tqdm

        self.session, self.cfg, self.metrics = session, cfg, metrics
        self.start_step, self.device = prepared.start_step, prepared.device
        self.device_name, self.peak = prepared.device_name, prepared.peak_flops
        self.fpt = prepared.flops_per_token
        # A bar only on a terminal or in a notebook: redirected to a file its redraws are noise (the step lines
        # carry the same facts).
        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
        self.bar = tqdm(total=cfg.max_steps, initial=self.start_step, unit="step",
                        disable=not (session.main and cfg.progress_bar and interactive),
                        dynamic_ncols=True, file=sys.stderr)
        self.run_t0 = time.time()
        self.tok_rates = []  # tokens/s of this session's steps after its first (that one compiles)
        self.eta_from = None  # (step, time) at the end of this session's first step

    def step_done(self, step: int, tokens: int, t0: float, loss_value: float, norm_value: float) -> None:
        """Report the step that just ended: `step` and `tokens` count it; it started at `t0`."""
        cfg, world, tokens_per_step = self.cfg, self.session.world, self.cfg.total_batch_size
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0
        tok_s = tokens_per_step / dt
        if step > self.start_step + 1:
            self.tok_rates.append(tok_s)
        lr = lr_at(step - 1, cfg)
        m = mfu(self.fpt, tok_s, self.peak, world)
        # ETA from the wall time per step since this session's first step (compiling excluded; evaluations
        # and checkpoints included, as they will be in the steps left).
        now = time.time()
        if step == self.start_step + 1:
            self.eta_from = (step, now)
        eta = None
        if step > self.eta_from[0] and step < cfg.max_steps:
            eta = (now - self.eta_from[1]) / (step - self.eta_from[0]) * (cfg.max_steps - step)
        self.session.log(step_line(step, cfg.max_steps, loss_value, lr, norm_value, dt, tok_s, m, eta_s=eta))
        if self.session.main:
            self.metrics.write("train", step=step, loss=loss_value, lr=lr, grad_norm=norm_value, dt_ms=1000 * dt,
                               tok_per_s=tok_s, mfu=m, tokens=tokens)
        self.session.accelerator.log({"train/loss": loss_value, "train/lr": lr, "train/grad_norm": norm_value,
                                      "train/tokens": tokens, "perf/tok_per_s": tok_s,
                                      **({"perf/mfu": m} if m is not None else {})}, step=step)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()

    def summary(self, step: int, tokens: int, last_saved) -> None:
        """The run reached max_steps: its summary record (metrics.jsonl) and a last line."""
        wall = time.time() - self.run_t0
        if not self.session.main:
            return
        tok_rates, world, start_step = self.tok_rates, self.session.world, self.start_step
        # steps and tokens: the run's totals; wall_time_s, tok/s and mfu: this session's (since its start)
        summary = dict(steps=step, tokens=tokens, session_steps=step - start_step, wall_time_s=wall,
                       device=self.device_name, world_size=world,
                       precision=self.session.accelerator.mixed_precision,
                       mean_tok_per_s=(sum(tok_rates) / len(tok_rates)) if tok_rates else None,
                       mfu=mfu(self.fpt, sum(tok_rates) / len(tok_rates), self.peak, world) if tok_rates else None,
                       flops_formula=FLOPS_FORMULA, last_checkpoint=last_saved)
        self.metrics.write("summary", **summary)
        session = f" in {wall:.1f}s" if start_step == 0 else f" ({step - start_step} this session, in {wall:.1f}s)"
        self.session.log(f"done: {step} steps, {tokens:,} tokens{session}")
