"""Training curves as PNG: train/val loss and HellaSwag vs step, with the reference lines (build-nanogpt's
notebook plot, as a command). Several runs overlay in one figure, each in its own colour.

    python -m publish.plots runs/124M/metrics.jsonl --out curves.png
    python -m publish.plots runs/124M ../build-nanogpt/log/log.txt --label ours --label build-nanogpt --out cmp.png

Inputs: a run folder, its metrics.jsonl, an export (its logs/), a converted build-nanogpt folder, or a build-nanogpt
log.txt. HellaSwag is drawn under one scorer per
figure (publish.references): `--scorer` picks it; by default the one every input has, lm-eval first. A run that
lacks the chosen scorer's numbers is left out of that panel with a warning, never mixed in. OpenAI GPT-2's
FineWeb-Edu val loss is drawn only where it compares (`--reference-loss auto`: an input on FineWeb-Edu from the Hub,
a build-nanogpt log, or data not known).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from publish.metrics import RunMetrics, load_metrics
from publish.references import HELLASWAG_ACC_NORM, HELLASWAG_EXAMPLES, SCORERS, VAL_LOSS, val_loss_reference_applies

PANELS = ("loss", "hellaswag")
_REFERENCE_STYLES = ("tab:red", "tab:green")  # GPT-2, GPT-3: build-nanogpt's colours
_RANDOM_CHANCE = 0.25  # four endings


def pick_scorer(runs: Sequence[RunMetrics]) -> str:
    """The scorer every run with HellaSwag numbers has (lm-eval preferred), else the most common one."""
    with_hellaswag = [run for run in runs if run.hellaswag]
    for scorer in SCORERS:
        if with_hellaswag and all(scorer in run.hellaswag for run in with_hellaswag):
            return scorer
    counts = {scorer: sum(scorer in run.hellaswag for run in runs) for scorer in SCORERS}
    return max(SCORERS, key=lambda scorer: counts[scorer])


def plot_runs(
    runs: Sequence[RunMetrics],
    out: str | Path,
    *,
    panels: Sequence[str] = PANELS,
    scorer: str | None = None,
    reference_loss: bool = True,
    title: str | None = None,
    mark_step: int | None = None,
) -> Path:
    """Draw `panels` side by side for `runs` and save a PNG at `out`. Returns the path.

    `mark_step`: a vertical line at that step (the exported checkpoint) when the curves go past it."""
    out = output_path(out)
    fig = make_figure(runs, panels=panels, scorer=scorer, reference_loss=reference_loss, title=title,
                      mark_step=mark_step)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def output_path(out: str | Path) -> Path:
    """The file `plot_runs` writes for `out`: `out` itself, or `out` + ".png" when it has no extension (what
    matplotlib would write anyway, named here so callers can say it). ValueError for a folder or a format
    matplotlib cannot write."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out} is a folder: give the image file to write, e.g. --out {out / 'curves.png'}")
    if not out.suffix:
        return out.with_name(out.name + ".png")
    supported = FigureCanvasBase.get_supported_filetypes()
    if out.suffix[1:].lower() not in supported:
        raise ValueError(f"{out}: matplotlib cannot write {out.suffix!r} files; end --out with .png (or one of "
                         f"{', '.join('.' + ext for ext in sorted(supported))})")
    return out


def make_figure(
    runs: Sequence[RunMetrics],
    *,
    panels: Sequence[str] = PANELS,
    scorer: str | None = None,
    reference_loss: bool = True,
    title: str | None = None,
    mark_step: int | None = None,
) -> Figure:
    """The figure `plot_runs` saves (one axis per panel, in order)."""
    unknown = [panel for panel in panels if panel not in PANELS]
    if unknown or not panels:
        raise ValueError(f"panels must be among {PANELS}, got {list(panels)}")
    if not runs:
        raise ValueError("nothing to plot: no runs given")
    scorer = scorer or pick_scorer(runs)
    if scorer not in SCORERS:
        raise ValueError(f"unknown HellaSwag scorer {scorer!r}; choose one of {SCORERS}")
    fig = Figure(figsize=(6.5 * len(panels), 4.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        if panel == "loss":
            _draw_loss(ax, runs, reference_loss)
        else:
            _draw_hellaswag(ax, runs, scorer)
        last = max((run.last_step for run in runs if run.last_step is not None), default=None)
        if mark_step is not None and last is not None and mark_step < last:
            ax.axvline(mark_step, color="black", linestyle=":", linewidth=1.0, label=f"exported step {mark_step}")
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _finite(run: RunMetrics, what: str, series: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """The points of `series` with a finite value; warns how many NaN/Infinity ones (a diverged run) it left out."""
    kept = [(step, value) for step, value in series if math.isfinite(value)]
    if len(kept) < len(series):
        bad = [step for step, value in series if not math.isfinite(value)]
        warnings.warn(f"{run.name}: {len(bad)} of {len(series)} {what} values are NaN or Infinity (the first at "
                      f"step {bad[0]}); left out of the plot, the {len(kept)} finite ones are drawn")
    return kept


def _draw_loss(ax, runs: Sequence[RunMetrics], reference_loss: bool) -> None:
    shown, points = [], []  # finite values drawn; (step, value) of every finite point
    for i, run in enumerate(runs):
        train, val = _finite(run, "train loss", run.train_loss), _finite(run, "val loss", run.val_loss)
        if train:
            steps, values = zip(*train)
            ax.plot(steps, values, color=_colour(i), alpha=0.45, linewidth=0.9, label=f"{run.name} train")
            shown += values
        if val:
            steps, values = zip(*val)
            ax.plot(steps, values, color=_colour(i), linewidth=2.0, marker="o", markersize=3, zorder=3,
                    label=f"{run.name} val")
            shown += values
        points += train + val
    if not shown:
        warnings.warn("no loss values in any input: the loss panel is empty")
    if reference_loss:
        ax.axhline(VAL_LOSS.value, color=_REFERENCE_STYLES[0], linestyle="--", linewidth=1.2,
                   label=f"{VAL_LOSS.label} {VAL_LOSS.value:.4f}")
    if shown:
        # The first steps (loss ~11 at init) would flatten everything else, as in build-nanogpt's plot: the
        # y-range covers the points after the first 10% of steps; the early ones run off the top.
        last = max(step for step, _ in points)
        late = [v for step, v in points if step >= 0.1 * last] or shown
        top, bottom = max(late), min(shown + ([VAL_LOSS.value] if reference_loss else []))
        pad = 0.08 * max(top - bottom, 0.1)
        ax.set_ylim(bottom - pad, top + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _draw_hellaswag(ax, runs: Sequence[RunMetrics], scorer: str) -> None:
    for i, run in enumerate(runs):
        series = _finite(run, f"HellaSwag ({scorer})", run.hellaswag.get(scorer) or [])
        if not series:
            if run.hellaswag:
                warnings.warn(f"{run.name}: no HellaSwag numbers under the {scorer} scorer (it has "
                              f"{sorted(run.hellaswag)}); left out of the HellaSwag panel")
            continue
        steps, values = zip(*series)
        ax.plot(steps, values, color=_colour(i), linewidth=1.8, marker="o", markersize=3,
                label=run.name + _subset_note(run, steps))
    for reference, colour in zip(HELLASWAG_ACC_NORM[scorer], _REFERENCE_STYLES):
        ax.axhline(reference.value, color=colour, linestyle="--", linewidth=1.2,
                   label=f"{reference.label} {reference.value:.4f}")
    ax.axhline(_RANDOM_CHANCE, color="grey", linestyle=":", linewidth=1.0, label="random chance 0.25")
    ax.set_xlabel("step")
    ax.set_ylabel("acc_norm")
    ax.set_title(f"HellaSwag acc_norm ({scorer} scorer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _subset_note(run: RunMetrics, steps) -> str:
    """' (100 examples)' when the plotted numbers are on another count of examples than the 10,042 the reference
    lines are on (--hellaswag_limit, another file); '' for the full set or when the log does not say
    (build-nanogpt's log.txt)."""
    counts = {int(n) for n in (run.hellaswag_records.get(s, {}).get("n") for s in steps) if n}
    if not counts or counts == {HELLASWAG_EXAMPLES}:
        return ""
    shown = ", ".join(f"{n:,}" for n in sorted(counts))
    return f" ({shown} examples)"


def _reference_loss_wanted(setting: str, runs: Sequence[RunMetrics]) -> bool:
    """The FineWeb-Edu val-loss reference means something only next to a loss on that data: a run on other data
    (the demo's built-in corpus, Tiny Shakespeare) was drawn against it by default."""
    if setting != "auto":
        return setting == "on"
    from publish.export_model import guess_datasets  # here: export_model imports this module

    for run in runs:
        config = Path(run.path).parent / "run_config.yaml"
        if run.path.name != "metrics.jsonl" or not config.is_file():
            return True  # build-nanogpt's log.txt (FineWeb-Edu by construction), or data not known
        try:
            run_config = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return True
        if not isinstance(run_config, dict) or val_loss_reference_applies(guess_datasets(run_config)):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m publish.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="run folder, metrics.jsonl, export folder, or build-nanogpt log.txt")
    parser.add_argument("--out", required=True,
                        help="image file to write: PNG (.png is added to a name without extension), or .svg, .pdf")
    parser.add_argument("--label", action="append", default=[], help="legend name per input, in order")
    parser.add_argument("--scorer", choices=SCORERS, help="HellaSwag scorer to draw (default: the common one)")
    parser.add_argument("--panel", choices=("both",) + PANELS, default="both")
    parser.add_argument("--reference-loss", choices=("auto", "on", "off"), default="auto",
                        help="draw OpenAI GPT-2 124M's FineWeb-Edu val loss as a line: 'auto' = when an input "
                             "trained on FineWeb-Edu from the Hub (its run_config.yaml's data says so), or is a "
                             "build-nanogpt log.txt, or its data is not known (default: %(default)s)")
    parser.add_argument("--no-reference-loss", dest="reference_loss", action="store_const", const="off",
                        help="same as --reference-loss off")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.inputs):
        parser.error(f"{len(args.label)} --label for {len(args.inputs)} inputs: give one per input or none")
    labels = args.label or [None] * len(args.inputs)
    try:
        output_path(args.out)  # a bad --out is refused before any reading or drawing
        runs = [load_metrics(path, name=label) for path, label in zip(args.inputs, labels)]
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    panels = PANELS if args.panel == "both" else (args.panel,)
    try:
        with warnings.catch_warnings():  # what was left out of the figure, as a plain line (no source location)
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
            out = plot_runs(runs, args.out, panels=panels, scorer=args.scorer,
                            reference_loss=_reference_loss_wanted(args.reference_loss, runs), title=args.title)
    except OSError as err:  # e.g. no permission, or a parent of --out is a file
        print(f"error: could not write {output_path(args.out)}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")  # the file really written (p8 -> p8.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
