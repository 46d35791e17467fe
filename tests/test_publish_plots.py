"""Metrics readers (our metrics.jsonl, build-nanogpt log.txt) and the curves drawn from them."""

import json
import math
import warnings

import pytest
from PIL import Image

from publish.metrics import load_metrics
from publish.plots import main as plots_main
from publish.plots import make_figure, pick_scorer
from publish.references import SCORER_BUILD_NANOGPT, SCORER_LM_EVAL


def write_jsonl(path, records, trailing=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + trailing)
    return path


def ours(tmp_path, name="ours"):
    run = tmp_path / name
    run.mkdir()
    records = []
    for step in range(0, 101, 10):
        records.append({"type": "train", "step": step, "loss": 11.0 - step / 20, "lr": 6e-4, "grad_norm": 1.0,
                        "dt_ms": 10.0, "tok_per_s": 1000.0, "mfu": 0.4, "tokens": step * 100})
        if step % 50 == 0:
            records.append({"type": "val", "step": step, "val_loss": 11.1 - step / 20, "val_tokens": 1000})
            records.append({"type": "hellaswag", "step": step, "acc": 0.25, "acc_norm": 0.26 + step / 1000,
                            "acc_tokennorm": 0.255 + step / 1000, "n": 10042})
    records.append({"type": "sample", "step": 100, "prompt": "Hi", "texts": ["Hi there"]})
    return write_jsonl(run / "metrics.jsonl", records)


def build_nanogpt_log(tmp_path):
    lines = []
    for step in range(0, 201, 25):
        lines.append(f"{step} train {10.5 - step / 40:.6f}")
        if step % 100 == 0:
            lines += [f"{step} val {10.6 - step / 40:.4f}", f"{step} hella {0.25 + step / 4000:.4f}"]
    path = tmp_path / "log.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_series_and_hellaswag_under_both_scorers(tmp_path):
    run = load_metrics(ours(tmp_path).parent)  # a run folder works too
    assert run.name == "ours"
    assert run.train_loss[:2] == [(0, 11.0), (10, 10.5)]
    assert run.val_loss == [(0, 11.1), (50, 8.6), (100, 6.1)]
    assert run.hellaswag[SCORER_LM_EVAL] == [(0, 0.26), (50, 0.31), (100, 0.36)]
    assert run.hellaswag[SCORER_BUILD_NANOGPT] == [(0, 0.255), (50, 0.305), (100, 0.355)]
    assert run.last_step == 100


def test_build_nanogpt_log_txt(tmp_path):
    run = load_metrics(build_nanogpt_log(tmp_path), name="karpathy")
    assert run.train_loss[-1] == (200, 5.5)
    assert run.val_loss == [(0, 10.6), (100, 8.1), (200, 5.6)]
    # build-nanogpt's `hella` is its own token-normalised acc_norm: never filed under lm-eval
    assert list(run.hellaswag) == [SCORER_BUILD_NANOGPT]
    assert run.hellaswag[SCORER_BUILD_NANOGPT] == [(0, 0.25), (100, 0.275), (200, 0.3)]
    assert run.hellaswag_records[100] == {"acc_tokennorm": 0.275}  # what a model card reports at step 100


def test_resumed_run_later_line_wins_and_truncated_tail_is_skipped(tmp_path):
    path = write_jsonl(tmp_path / "metrics.jsonl", [
        {"type": "train", "step": 1, "loss": 5.0}, {"type": "train", "step": 2, "loss": 4.0},
        {"type": "train", "step": 2, "loss": 3.5},  # resumed from step 1: the rerun of step 2 is what continued
    ], trailing='{"type": "train", "st')
    with pytest.warns(UserWarning, match="truncated last line"):
        run = load_metrics(path)
    assert run.train_loss == [(1, 5.0), (2, 3.5)]


def test_what_an_abandoned_session_logged_past_its_resume_point_is_dropped(tmp_path):
    """Killed after step 4 (checkpoint at 2), resumed from 2 without HellaSwag: the killed session's rows past step
    2 stayed in the curves (a step-4 HellaSwag point that no run continuing from step 2 measured) until the same
    rows were logged again, and for good for a measurement the resumed session does not repeat."""
    path = write_jsonl(tmp_path / "metrics.jsonl", [
        {"type": "train", "step": s, "loss": 5.0 - s / 10} for s in range(1, 5)] + [
        {"type": "val", "step": 2, "val_loss": 4.9}, {"type": "val", "step": 4, "val_loss": 4.7},
        {"type": "hellaswag", "step": 4, "acc": 0.3, "acc_norm": 0.3, "acc_tokennorm": 0.3, "n": 10},
        {"type": "resume", "step": 2, "checkpoint": "c"},
        {"type": "train", "step": 3, "loss": 4.0}])
    run = load_metrics(path)
    assert run.train_loss == [(1, 4.9), (2, 4.8), (3, 4.0)] and run.val_loss == [(2, 4.9)]
    assert run.hellaswag == {} and run.hellaswag_records == {} and set(run.train_records) == {1, 2, 3}


@pytest.mark.parametrize("text, message", [
    ('{"type": "train", "step": 1, "loss": 2.0}\nnot json\n{"type": "train", "step": 2, "loss": 1.0}\n',
     r"metrics.jsonl:2: not valid JSON \(Expecting value\): fix or delete that line"),
    ('{"type": "val", "step": 1}\n', r"metrics.jsonl:1: a 'val' record without its 'val_loss' field: fix or delete"),
    # was "a 'val' record without a usable could not convert string to float: 'abc' field"
    ('{"type": "val", "step": 1, "val_loss": "abc"}\n', r"metrics.jsonl:1: a 'val' record with a value that is not "
                                                        r"a number \(could not convert string to float: 'abc'\)"),
    ('{"text": "a dataset row, not a metrics log"}\n[1, 2]\n', r"metrics.jsonl holds no records train.py writes"),
])
def test_bad_jsonl_lines_are_named(tmp_path, text, message):
    (tmp_path / "metrics.jsonl").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_metrics(tmp_path / "metrics.jsonl")


def test_a_metrics_file_that_is_not_text_is_named(tmp_path):
    """Bytes that are not UTF-8 (a damaged disk, the wrong file) gave export's "error: 'utf-8' codec can't
    decode byte 0xff in position 42: invalid start byte", naming neither the file nor a way out."""
    (tmp_path / "metrics.jsonl").write_bytes(b'{"type": "train", "step": 1, "loss": 2.0}\n\xff\xfe\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl is not UTF-8 text \(byte 42 is not\): pass a run's"):
        load_metrics(tmp_path / "metrics.jsonl")


def test_bad_log_txt_line_is_named(tmp_path):
    (tmp_path / "log.txt").write_text("0 train 10.9\n5 hellaswag 0.3\n")
    with pytest.raises(ValueError, match=r"log.txt:2: expected a build-nanogpt log line"):
        load_metrics(tmp_path / "log.txt")


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_figure_draws_the_run_and_the_reference_lines_of_its_scorer(tmp_path):
    run = load_metrics(ours(tmp_path))
    fig = make_figure([run])
    loss_ax, hella_ax = fig.axes
    loss = lines_by_label(loss_ax)
    assert list(loss["ours val"].get_ydata()) == [v for _, v in run.val_loss]
    assert list(loss["ours train"].get_xdata()) == [s for s, _ in run.train_loss]
    assert loss["OpenAI GPT-2 124M (FineWeb-Edu val) 3.2924"].get_ydata()[0] == 3.2924
    hella = lines_by_label(hella_ax)
    assert list(hella["ours"].get_ydata()) == [0.26, 0.31, 0.36]  # acc_norm under lm-eval
    assert hella["OpenAI GPT-2 124M 0.3114"].get_ydata()[0] == 0.3114
    assert hella["GPT-3 small 124M (paper) 0.3370"].get_ydata()[0] == 0.337
    assert "lm-eval" in hella_ax.get_title()


def test_a_hellaswag_curve_on_fewer_examples_says_how_many(tmp_path):
    """--hellaswag_limit 100 drew its curve beside the full-set reference lines as if comparable."""
    path = ours(tmp_path)
    write_jsonl(path, [{**r, "n": 100} if r["type"] == "hellaswag" else r
                       for r in map(json.loads, path.read_text().splitlines())])
    hella = lines_by_label(make_figure([load_metrics(path)]).axes[1])
    assert "ours (100 examples)" in hella and "OpenAI GPT-2 124M 0.3114" in hella


def test_overlay_with_log_txt_switches_both_runs_to_build_nanogpt_scorer(tmp_path):
    runs = [load_metrics(ours(tmp_path)), load_metrics(build_nanogpt_log(tmp_path), name="karpathy")]
    assert pick_scorer(runs) == SCORER_BUILD_NANOGPT
    hella = lines_by_label(make_figure(runs, panels=("hellaswag",)).axes[0])
    assert list(hella["ours"].get_ydata()) == [0.255, 0.305, 0.355]  # acc_tokennorm, not acc_norm
    assert list(hella["karpathy"].get_ydata()) == [0.25, 0.275, 0.3]
    assert hella["OpenAI GPT-2 124M 0.2955"].get_ydata()[0] == 0.2955
    assert "OpenAI GPT-2 124M 0.3114" not in hella


def test_forcing_lm_eval_scorer_leaves_the_log_txt_out_with_a_warning(tmp_path):
    runs = [load_metrics(ours(tmp_path)), load_metrics(build_nanogpt_log(tmp_path), name="karpathy")]
    with pytest.warns(UserWarning, match="karpathy: no HellaSwag numbers under the lm-eval scorer"):
        hella = lines_by_label(make_figure(runs, panels=("hellaswag",), scorer=SCORER_LM_EVAL).axes[0])
    assert "ours" in hella and "karpathy" not in hella


def test_plot_command_overlays_inputs_into_one_png(tmp_path, capsys):
    out = tmp_path / "figs" / "compare.png"
    code = plots_main([str(ours(tmp_path)), str(build_nanogpt_log(tmp_path)), "--label", "ours", "--label",
                       "build-nanogpt", "--out", str(out)])
    assert code == 0 and "wrote" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1560, 540)  # two panels, 13 x 4.5 in at 120 dpi


def test_plot_command_rejects_mismatched_labels_and_missing_files(tmp_path, capsys):
    with pytest.raises(SystemExit):
        plots_main([str(ours(tmp_path)), "--label", "a", "--label", "b", "--out", str(tmp_path / "x.png")])
    assert plots_main([str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no such metrics file" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_no_warning_for_a_single_consistent_run(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_figure([load_metrics(ours(tmp_path))])


def test_plot_command_says_the_file_it_really_wrote_and_refuses_a_folder(tmp_path, capsys):
    """`--out p8` printed "wrote p8" while matplotlib wrote p8.png; `--out <folder>` wrote <folder>.png."""
    run = str(ours(tmp_path))
    assert plots_main([run, "--panel", "loss", "--out", str(tmp_path / "p8")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'p8.png'}"
    with Image.open(tmp_path / "p8.png") as image:
        assert image.format == "PNG"
    assert not (tmp_path / "p8").exists()
    folder = tmp_path / "figs"
    folder.mkdir()
    assert plots_main([run, "--out", str(folder)]) == 2
    assert f"{folder} is a folder: give the image file to write, e.g. --out {folder / 'curves.png'}" in (
        capsys.readouterr().err)
    assert plots_main([run, "--out", str(tmp_path / "curves.xyz")]) == 2
    assert "cannot write '.xyz' files; end --out with .png" in capsys.readouterr().err
    assert not (tmp_path / "figs.png").exists() and list(folder.iterdir()) == []


def test_diverged_run_with_nan_and_infinity_is_plotted_from_its_finite_points(tmp_path, capsys):
    """NaN/Infinity losses made matplotlib raise "Axis limits cannot be NaN or Inf"; a diverged run is exactly
    the one to look at, so its finite points are drawn and the command says how many values it left out."""
    records = [{"type": "train", "step": s, "loss": 11.0 - s / 20} for s in range(0, 101, 10)]
    records[3]["loss"], records[5]["loss"], records[9]["loss"] = float("nan"), float("inf"), float("-inf")
    records += [{"type": "val", "step": 50, "val_loss": 8.6}, {"type": "val", "step": 100, "val_loss": float("nan")}]
    path = write_jsonl(tmp_path / "metrics.jsonl", records)  # json.dumps writes NaN / Infinity / -Infinity
    assert "NaN" in path.read_text() and "Infinity" in path.read_text()
    out = tmp_path / "diverged.png"
    assert plots_main([str(path), "--panel", "loss", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "3 of 11 train loss values are NaN or Infinity (the first at step 30)" in err
    assert "1 of 2 val loss values are NaN or Infinity (the first at step 100)" in err and "Traceback" not in err
    with Image.open(out) as image:
        assert image.format == "PNG"
    with pytest.warns(UserWarning) as caught:
        ax = make_figure([load_metrics(path, name="diverged")], panels=("loss",)).axes[0]
    assert sorted(str(w.message).split(" of ")[1].split(" are ")[0] for w in caught) == [
        "11 train loss values", "2 val loss values"]
    train = lines_by_label(ax)["diverged train"]
    assert len(train.get_ydata()) == 8 and all(map(math.isfinite, train.get_ydata()))
    assert all(map(math.isfinite, ax.get_ylim()))


def test_the_fineweb_edu_val_loss_line_is_drawn_by_default_only_where_it_compares(tmp_path):
    """`python -m publish.plots runs/demo` drew OpenAI GPT-2's FineWeb-Edu val loss beside a loss on Python's docs."""
    from publish.plots import _reference_loss_wanted

    def run_on(name, data_dir):
        path = ours(tmp_path, name)
        if data_dir is not None:
            (path.parent / "run_config.yaml").write_text(f"data_dir: {data_dir}\n")
        return load_metrics(path)

    builtin = tmp_path / "pydocs"  # a prepared folder's manifest names its source
    builtin.mkdir()
    (builtin / "manifest.json").write_text(json.dumps({"settings": {"source": {"kind": "builtin",
                                                                            "name": "builtin:pydocs"}}}))
    demo = run_on("demo", builtin)
    assert not _reference_loss_wanted("auto", [demo])
    assert _reference_loss_wanted("on", [demo]) and not _reference_loss_wanted("off", [run_on("unknown", None)])
    assert _reference_loss_wanted("auto", [demo, run_on("edu", "out/data/fineweb_edu_10B")])  # one compares
    assert _reference_loss_wanted("auto", [run_on("unknown2", None)])  # data not known: as before
    assert _reference_loss_wanted("auto", [load_metrics(build_nanogpt_log(tmp_path))])


def test_the_plots_command_passes_its_reference_loss_choice_to_the_figure(tmp_path, monkeypatch):
    """What the command line draws, not only what `_reference_loss_wanted` decides (test audit by mutation)."""
    import publish.plots

    builtin = tmp_path / "pydocs"
    builtin.mkdir()
    (builtin / "manifest.json").write_text(json.dumps({"settings": {"source": {"kind": "builtin",
                                                                            "name": "builtin:pydocs"}}}))
    run = ours(tmp_path, "demo").parent
    (run / "run_config.yaml").write_text(f"data_dir: {builtin}\n")
    drawn = []
    monkeypatch.setattr(publish.plots, "plot_runs", lambda runs, out, **kw: drawn.append(kw["reference_loss"]) or out)
    for choice in ([], ["--reference-loss", "on"], ["--no-reference-loss"]):
        assert publish.plots.main([str(run), "--out", str(tmp_path / "curves.png"), *choice]) == 0
    assert drawn == [False, True, False]


def test_a_log_txt_cut_off_mid_line_keeps_the_lines_before(tmp_path):
    """A build-nanogpt run stopped while writing: its last line is cut short (no newline). The whole log was
    refused; metrics.jsonl already kept what came before such a line."""
    (tmp_path / "log.txt").write_text("0 val 10.9\n0 train 10.95\n1 train 10.5\n2 tra")
    with pytest.warns(UserWarning, match=r"skipping a truncated last line \('2 tra'\)"):
        run = load_metrics(tmp_path / "log.txt")
    assert run.train_loss == [(0, 10.95), (1, 10.5)] and run.val_loss == [(0, 10.9)]
    (tmp_path / "log.txt").write_text("0 val 10.9\n2 tra\n")  # a whole line that is wrong is still an error
    with pytest.raises(ValueError, match=r"log.txt:2: expected a build-nanogpt log line"):
        load_metrics(tmp_path / "log.txt")


def test_an_export_or_a_converted_build_nanogpt_folder_is_read_by_its_logs(tmp_path):
    """`python -m publish.plots runs/124M export/other` compares with a published model's curves."""
    export = tmp_path / "export" / "gpt2repro-124M"
    (export / "logs").mkdir(parents=True)
    (export / "logs" / "metrics.jsonl").write_text(ours(tmp_path, "run").read_text())
    run = load_metrics(export)
    assert run.name == "gpt2repro-124M" and run.val_loss == [(0, 11.1), (50, 8.6), (100, 6.1)]
    converted = tmp_path / "bnano"
    (converted / "logs").mkdir(parents=True)
    (converted / "logs" / "build-nanogpt-log.txt").write_text(build_nanogpt_log(tmp_path).read_text())
    run = load_metrics(converted)
    assert run.name == "bnano" and list(run.hellaswag) == [SCORER_BUILD_NANOGPT]
    with pytest.raises(FileNotFoundError, match="without metrics.jsonl: pass a run folder, an export"):
        load_metrics(tmp_path)
