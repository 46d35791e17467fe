"""What the loop reports: one greppable line per step, a JSONL twin, and the FLOP accounting behind MFU.

FLOPs per trained token (nanoGPT / PaLM appendix B): 6*N + 12*L*H*Q*T, with N the parameter count without
the position embedding (tied lm_head counted once), L layers, H heads, Q head size, T sequence length.
GPT-2 124M at T=1024: ~855 MFLOP/token. MFU = FLOPs/token * tokens/s / (peak FLOP/s per device * devices).
The default peaks are bf16 dense matmul rates *measured* on our lent machines (8192^3 matmul), not datasheets.
"""

import json
import math
import time
import warnings
from pathlib import Path
from typing import Optional

FLOPS_FORMULA = "6N + 12*L*H*Q*T per token (nanoGPT/PaLM; N without wpe)"
MEASURED_PEAK_FLOPS = {"H100": 798e12, "H200": 790e12}  # measured bf16 peaks, from ../shared/docs/REFERENCE.md


def flops_per_token(model, seq_len: int) -> int:
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())  # unique tensors: tied lm_head counted once
    for name, p in model.named_parameters():
        if name.endswith("wpe.weight"):
            n -= p.numel()
    head_dim = cfg.n_embd // cfg.n_head
    return 6 * n + 12 * cfg.n_layer * cfg.n_head * head_dim * seq_len


def default_peak_flops(device_name: str) -> Optional[float]:
    for key, flops in MEASURED_PEAK_FLOPS.items():
        if key in device_name:
            return flops
    return None


def mfu(flops_per_tok: float, tokens_per_s: float, peak_flops: Optional[float], world_size: int) -> Optional[float]:
    if not peak_flops:
        return None
    return flops_per_tok * tokens_per_s / (peak_flops * world_size)


def format_duration(seconds: float) -> str:
    """`45s`, `12m05s`, `3h07m`: short enough for a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def step_line(step: int, max_steps: int, loss: float, lr: float, grad_norm: float, dt_s: float,
              tok_per_s: float, mfu_value: Optional[float], eta_s: Optional[float] = None) -> str:
    """`step    12/19073 | loss 6.123456 | lr 6.0000e-04 | grad_norm 1.2345 | dt 123.45ms | tok/s 123,456 | mfu 45.10%`
    and, given `eta_s`, ` | eta 1h02m` (logs without a progress bar still say when the run ends)."""
    mfu_text = "n/a" if mfu_value is None else f"{100 * mfu_value:.2f}%"
    line = (
        f"step {step:>6}/{max_steps} | loss {loss:.6f} | lr {lr:.4e} | grad_norm {grad_norm:.4f} | "
        f"dt {1000 * dt_s:.2f}ms | tok/s {tok_per_s:,.0f} | mfu {mfu_text}"
    )
    return line if eta_s is None else f"{line} | eta {format_duration(eta_s)}"


def _clean(value):
    """JSON has no NaN/Inf: write them as strings so the line stays valid JSON and the event stays visible."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends one JSON object per line to `path`, field "type" first, flushed at once (a crash loses nothing).
    Every row also gets `time`: wall-clock seconds since the epoch when it was written (elapsed-time curves,
    throughput over any window of steps)."""

    def __init__(self, path: Path, log=None):
        self.path = Path(path)
        self._drop_truncated_tail(log)
        self._file = open(self.path, "a", buffering=1)

    def _drop_truncated_tail(self, log) -> None:
        """A session killed mid-write (or stopped by a full disk) can leave a last line without its newline.
        Readers skip it while it is last; appended to, it would merge with the next record into a bad line in
        the middle of the file, which plots and export refuse. So it is cut off (the resumed session logs those
        steps again), and said through `log` (else a warning)."""
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as f:
            size = f.seek(0, 2)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            keep = size  # the start of the last line: after the last newline (backwards, a chunk at a time: a
            while keep > 0:  # crash can leave a tail of NUL bytes longer than any record)
                start = max(0, keep - (1 << 20))
                f.seek(start)
                newline = f.read(keep - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                keep = start
            f.seek(keep)
            last = f.read()
            try:
                whole = isinstance(json.loads(last), dict)
            except ValueError:  # UnicodeDecodeError included
                whole = False
            if whole:  # a complete record that only lacks its newline (written in two pieces): keep it
                f.seek(size)
                f.write(b"\n")
                return
            fragment = last.decode("utf-8", errors="replace")
            f.truncate(keep)
        message = (f"{self.path}: dropped a truncated last line left by a session killed mid-write "
                   f"({fragment[:120]!r}{'...' if len(fragment) > 120 else ''})")
        if log is None:
            warnings.warn(message, stacklevel=3)
        else:
            log(f"WARNING: {message}")

    def write(self, type: str, **fields) -> dict:
        record = {"type": type, **{k: _clean(v) for k, v in fields.items()}, "time": round(time.time(), 3)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path, type: Optional[str] = None) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in rows if type is None or r["type"] == type]
