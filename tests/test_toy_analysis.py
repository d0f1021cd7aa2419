"""Log analysis: accuracy plots and their means, rank/set tables, decision-region figures."""
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import toy_analysis
import toy_datasets
from pruning_toolkit import toy_log
from pruning_toolkit import toy_model
import toy_pruning

ROOT = Path(__file__).resolve().parents[1]


def accuracy_value(dataset, criterion, per_class, seed, scenario, stage):
    """A made-up but distinct accuracy for every evaluation of the synthetic log."""
    base = {"moon": 90.0, "mult": 80.0}[dataset] + (5.0 if scenario == "train" else 0.0)
    if stage == "pre":
        return base + seed * 0.5
    return base - {"lrp": 1.0, "weight": 7.0}[criterion] - 10.0 / per_class + seed


def synthetic_accuracy_lines():
    lines = []
    for dataset, criterion, per_class, seed in itertools.product(("moon", "mult"), ("lrp", "weight"), (1, 5),
                                                                 range(3)):
        total = per_class * toy_datasets.NUM_CLASSES[dataset]
        for stage, scenario in itertools.product(("pre", "post"), ("train", "test")):
            key = toy_log.format_key(dataset, criterion, total, seed, scenario, stage)
            lines.append(toy_log.format_accuracy_line(
                key, accuracy_value(dataset, criterion, per_class, seed, scenario, stage)))
    return lines


def test_accuracy_statistics_are_means_and_stds_over_seeds():
    records = [toy_log.parse_line(line) for line in synthetic_accuracy_lines()]
    statistics = toy_analysis.accuracy_statistics(records)
    assert sorted(statistics) == [("moon", "test"), ("moon", "train"), ("mult", "test"), ("mult", "train")]
    curves = statistics[("mult", "train")]
    assert sorted(curves) == ["lrp", "unpruned", "weight"]
    post = [accuracy_value("mult", "lrp", 5, s, "train", "post") for s in range(3)]
    assert curves["lrp"][5] == pytest.approx((np.mean(post), np.std(post), 3))
    pre = [accuracy_value("mult", c, 1, s, "train", "pre") for c in ("lrp", "weight") for s in range(3)]
    assert curves["unpruned"][1] == pytest.approx((np.mean(pre), np.std(pre), 6))


def test_accuracy_plots_use_the_spec_colours(tmp_path):
    records = [toy_log.parse_line(line) for line in synthetic_accuracy_lines()]
    written, means = toy_analysis.write_accuracy_plots(records, tmp_path)
    expected = {f"{d}-{s}.svg" for d in ("moon", "mult") for s in ("train", "test")} | {"combined.svg",
                                                                                      "combined.png"}
    assert {p.name for p in written} == expected
    svg = (tmp_path / "moon-train.svg").read_text(encoding="utf-8")
    assert "#ff0000" in svg and "#000000" in svg  # lrp red, weight and the unpruned model black
    assert "#0000ff" not in svg and "#008000" not in svg  # no taylor (blue) or grad (green) in this log
    assert "stroke-dasharray" in svg  # the dashed unpruned line
    lrp_mean = np.mean([accuracy_value("moon", "lrp", 1, s, "test", "post") for s in range(3)])
    assert f"| {lrp_mean:.2f} |" in means.split("moon/test")[1].split("moon/train")[0]


def test_analyze_cli_prints_means_and_writes_svgs(tmp_path):
    log = tmp_path / "out" / "log.txt"
    toy_log.append_lines(log, synthetic_accuracy_lines())
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "-a", "-l", str(log)], capture_output=True,
                            text=True, env=dict(os.environ, MPLBACKEND="Agg"), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "moon/train" in result.stdout and "mult/test" in result.stdout
    for name in ("moon-train.svg", "moon-test.svg", "mult-train.svg", "mult-test.svg", "combined.png"):
        assert (log.parent / name).stat().st_size > 0


NEURONS = 3000


def synthetic_rank_runs():
    """weight: one fixed order; grad: weight's order reversed; lrp: a random order per run."""
    rng = np.random.default_rng(0)
    weight_order = rng.permutation(NEURONS)
    runs = {}
    for per_class, seed in itertools.product((1, 5), range(3)):
        runs[("weight", per_class, seed)] = weight_order
        runs[("grad", per_class, seed)] = weight_order[::-1]
        runs[("lrp", per_class, seed)] = rng.permutation(NEURONS)
    return runs


def rank_records(runs, dataset="moon"):
    lines = [toy_log.format_rank_line(toy_log.format_key(dataset, c, n * 2, s, "rankselection", "pre"), order)
             for (c, n, s), order in runs.items()]
    return [toy_log.parse_line(line) for line in lines]


def table_cell(text, header, measure, row, column):
    """The cell (row, column) of the ``measure`` table in the section whose header contains ``header``."""
    after_header = text.split(header.upper(), 1)[1].split("\n", 2)[2]  # skip the rest of the header
    section = after_header.split("\n#", 1)[0]
    for block in section.split("\n\n"):
        rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
                for line in block.strip().splitlines() if line.startswith("|")]
        if rows and rows[0][0] == measure:
            columns = rows[0]
            for cells in rows[1:]:
                if cells[0] == str(row):
                    return cells[columns.index(str(column))]
    raise AssertionError(f"no cell {measure} {row} {column} under {header}")


def ranks_of(order):
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def test_rank_tables_against_direct_scipy_computation():
    runs = synthetic_rank_runs()
    text = toy_analysis.rank_tables(rank_records(runs), "moon")
    case1 = "moon n=5 case 1"
    assert table_cell(text, case1, "spearman", "weight", "weight") == "1.000+-0.000"
    assert table_cell(text, case1, "spearman", "weight", "grad") == ""
    case3 = "moon n=1 case 3"
    assert table_cell(text, case3, "spearman", "weight", "grad") == "-1.000+-0.000"
    assert table_cell(text, case3, "kendalltau", "grad", "weight") == "-1.000+-0.000"
    assert table_cell(text, case3, "first-125", "weight", "grad") == "0.000+-0.000"
    assert table_cell(text, case3, "last-1000", "weight", "weight") == "1.000+-0.000"

    pairs = [(runs[("lrp", 1, s)], runs[("weight", 1, s)]) for s in range(3)]
    spearman = [stats.spearmanr(ranks_of(a), ranks_of(b)).statistic for a, b in pairs]
    assert table_cell(text, case3, "spearman", "lrp", "weight") == f"{np.mean(spearman):.3f}+-{np.std(spearman):.3f}"
    kendall = [stats.kendalltau(ranks_of(a), ranks_of(b)).statistic for a, b in pairs]
    assert table_cell(text, case3, "kendalltau", "weight", "lrp") == f"{np.mean(kendall):.3f}+-{np.std(kendall):.3f}"
    overlap = [len(set(a[:250]) & set(b[:250])) / 250 for a, b in pairs]
    assert table_cell(text, case3, "first-250", "lrp", "weight") == f"{np.mean(overlap):.3f}+-{np.std(overlap):.3f}"

    # case 2: lrp against itself only on the same seed; lrp against weight on all 9 seed pairs
    assert table_cell(text, "moon n=1 case 2", "spearman", "lrp", "lrp") == "1.000+-0.000"
    all_pairs = [stats.spearmanr(ranks_of(runs[("lrp", 1, s)]), ranks_of(runs[("weight", 1, t)])).statistic
                 for s in range(3) for t in range(3)]
    assert table_cell(text, "moon n=1 case 2", "spearman", "lrp", "weight") == \
        f"{np.mean(all_pairs):.3f}+-{np.std(all_pairs):.3f}"

    # cases 4 and 5: one criterion across sample sizes; weight never changes
    assert table_cell(text, "moon and weight case 4", "weight:spearman", 1, 5) == "1.000+-0.000"
    assert table_cell(text, "moon and lrp case 5", "lrp:first-125", 5, 5) == "1.000+-0.000"
    across = [len(set(runs[("lrp", 1, s)][-500:]) & set(runs[("lrp", 5, t)][-500:])) / 500
              for s in range(3) for t in range(3)]
    assert table_cell(text, "moon and lrp case 4", "lrp:last-500", 1, 5) == \
        f"{np.mean(across):.3f}+-{np.std(across):.3f}"


def test_rank_analysis_cli_writes_one_table_file_per_dataset(tmp_path):
    log = tmp_path / "log.txt"
    runs = {key: order for key, order in synthetic_rank_runs().items() if key[2] < 2}
    toy_log.append_lines(log, [toy_log.format_rank_line(
        toy_log.format_key(d, c, n * toy_datasets.NUM_CLASSES[d], s, "rankselection", "pre"), order)
        for d in ("moon", "mult") for (c, n, s), order in runs.items()])
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "-a", "-rl", "-l", str(log)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for dataset in ("moon", "mult"):
        text = (tmp_path / f"rank_and_set-{dataset}.txt").read_text(encoding="utf-8")
        assert f"# {dataset.upper()} N=1 CASE 1" in text and f"# {dataset.upper()} AND GRAD CASE 5" in text
    assert not (tmp_path / "rank_and_set-circle.txt").exists()


def test_decision_grid_spans_training_data_with_margin():
    X = np.array([[0.0, -1.0], [3.0, 1.0]])
    xs, ys = toy_analysis.decision_grid(X)
    assert (xs[0], xs[-1], ys[0], ys[-1]) == pytest.approx((-0.1, 3.1, -1.1, 1.1))
    assert len(ys) == 200 and len(xs) == round(3.2 / (2.2 / 199)) + 1


def test_class_colours_are_distinct_and_follow_the_colormap():
    import matplotlib
    dark2 = toy_analysis.class_colours("Dark2", 4)
    assert list(dark2.colors) == list(matplotlib.colormaps["Dark2"].colors[:4])
    viridis = toy_analysis.class_colours("viridis", 4)
    assert len({tuple(c) for c in viridis.colors}) == 4


def test_render_evaluations_writes_one_svg_per_log_line(tmp_path):
    torch.manual_seed(0)
    X, y = toy_datasets.generate("mult", 200, 0)
    model = toy_model.build_model(4, hidden_width=30)
    prepared = toy_pruning.prepare("mult", "cpu", model=model, training_set=(X, y))
    result = toy_pruning.run(prepared, "grad", 2, 0, count=30)
    written = toy_analysis.render_evaluations(result.evaluations, prepared.train_X, "grad", "Set1", tmp_path)
    assert [p.name for p in written] == [f"{line.split(' ')[0]}.svg" for line in result.lines]
    assert all(p.read_text(encoding="utf-8").lstrip().startswith("<?xml") for p in written)
    xs, ys = toy_analysis.decision_grid(X)
    grid = toy_analysis.predict_grid(result.pruned_model, xs, ys)
    point = torch.tensor([[xs[7], ys[3]]], dtype=torch.float32)
    assert grid[3, 7] == result.pruned_model(point).argmax().item()
