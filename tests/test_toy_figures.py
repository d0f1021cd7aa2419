"""Full-scale analysis helpers: the qualitative figure's runs and panels, Kendall-tau on worker processes."""
import numpy as np
import pytest
import torch
from matplotlib import image
from scipy import stats

import toy_analysis
import toy_grid
import toy_log
from test_toy_grid import WIDTH, expected_lines, read_lines, tiny_prepared


@pytest.fixture(scope="module")
def prepared():
    return tiny_prepared()


def test_figure_runs_log_their_lines_once_and_group_by_dataset(tmp_path, prepared):
    runs = toy_grid.parse_grid("circle,mult", "lrp,taylor,weight", "3", "5")
    log = tmp_path / "log.txt"
    rows = toy_grid.figure_runs(runs, log, prepared=prepared, count=WIDTH)
    assert [dataset for dataset, _, _ in rows] == ["circle", "mult"]
    assert [[criterion for criterion, _ in results] for _, _, results in rows] == [["lrp", "taylor", "weight"]] * 2
    assert read_lines(log) == expected_lines(prepared, runs)
    assert [line for _, _, results in rows for _, result in results for line in result.lines] == read_lines(log)
    toy_grid.figure_runs(runs, log, prepared=prepared, count=WIDTH)
    assert len(read_lines(log)) == 4 * len(runs)


def test_qualitative_figure_has_a_row_per_dataset_and_a_column_per_panel(tmp_path, prepared):
    runs = toy_grid.parse_grid("moon,mult", "lrp,grad", "2", "0")
    rows = toy_grid.figure_runs(runs, tmp_path / "log.txt", prepared=prepared, count=WIDTH)
    panels = toy_analysis.qualitative_panels(rows[1][2])
    assert [title.split(":")[0] for title, _, _, _ in panels] == ["training data", "reference samples", "lrp",
                                                                 "grad"]
    (_, lrp), (_, grad) = rows[1][2]
    assert panels[0][1] is lrp.evaluations[0].model and len(panels[0][3]) == 200  # unpruned, training set
    assert panels[1][1] is lrp.evaluations[0].model and len(panels[1][3]) == 8  # unpruned, 2 per class
    assert panels[3][1] is grad.pruned_model and torch.equal(panels[3][2], grad.evaluations[3].X)
    assert panels[2][0] == f"lrp: {lrp.evaluations[2].accuracy:.1f} % (train)"
    svg, png = toy_analysis.write_qualitative_figure(rows, "Accent", tmp_path / "out")
    height, width = image.imread(png).shape[:2]
    assert width / height == pytest.approx(4 / 2, rel=0.05)
    text = svg.read_text(encoding="utf-8")
    assert text.count("reference samples: 2 per class") == 2 and text.count("(train)") == 4


def random_orders(runs, neurons, seed):
    rng = np.random.default_rng(seed)
    return [rng.permutation(neurons) for _ in range(runs)]


def test_kendall_tau_on_worker_processes_equals_scipy(monkeypatch):
    monkeypatch.setattr(toy_analysis, "_KENDALL_CHUNK", 7)  # several chunks per worker
    orders = random_orders(9, 300, 0)
    orders[1] = orders[0][::-1]
    pairs = [(a, b) for a in range(9) for b in range(9)]
    serial, parallel = toy_analysis.RankComparison(orders), toy_analysis.RankComparison(orders)
    serial.precompute_kendall(pairs, jobs=1)
    parallel.precompute_kendall(pairs, jobs=2)
    ranks = [np.argsort(order) for order in orders]
    expected = [1.0 if a == b else stats.kendalltau(ranks[a], ranks[b]).statistic for a, b in pairs]
    assert parallel.values("kendalltau", pairs) == serial.values("kendalltau", pairs)
    np.testing.assert_allclose(parallel.values("kendalltau", pairs), expected, rtol=0, atol=1e-12)
    assert parallel.kendall(0, 1) == pytest.approx(-1.0)


def test_rank_tables_do_not_depend_on_the_number_of_jobs():
    orders = random_orders(2 * 2 * 3, 200, 1)
    records = [toy_log.LogRecord("moon", criterion, 2 * n, seed, "rankselection", "pre", orders[i].tolist())
               for i, (criterion, n, seed) in enumerate((c, n, s) for c in ("lrp", "weight") for n in (1, 5)
                                                        for s in range(3))]
    assert toy_analysis.rank_tables(records, "moon", jobs=2) == toy_analysis.rank_tables(records, "moon", jobs=1)
