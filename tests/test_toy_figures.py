"""Full-scale analysis helpers: the qualitative figure's runs and panels, Kendall-tau on worker processes."""
import numpy as np
import pytest
import torch
from matplotlib import image
from scipy import stats

from pruning_toolkit import toy_analysis
from pruning_toolkit import toy_grid
from pruning_toolkit import toy_log
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


@pytest.mark.parametrize("neurons, chunk", [(2, 1), (7, 4), (60, 100), (300, 1000), (300, 1 << 15)])
def test_kendall_tau_matrix_equals_scipy(neurons, chunk):
    rng = np.random.default_rng(neurons)
    ranks = np.array([rng.permutation(neurons) for _ in range(6)])
    ranks[1] = neurons - 1 - ranks[0]  # reversed: -1
    ranks[2] = ranks[0]  # identical: 1
    matrix = toy_analysis.kendall_tau_matrix(ranks, chunk_columns=chunk)
    expected = [[stats.kendalltau(a, b).statistic for b in ranks] for a in ranks]
    np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-12)
    assert matrix[0, 1] == -1.0 and matrix[0, 2] == 1.0


def test_kendall_tau_matrix_on_a_hand_counted_case():
    # (0,1,2,3) against (1,0,3,2): 2 of the 6 pairs discordant -> (4 - 2) / 6
    assert toy_analysis.kendall_tau_matrix([[0, 1, 2, 3], [1, 0, 3, 2]])[0, 1] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least 2"):
        toy_analysis.kendall_tau_matrix([[0], [0]])


def test_rank_tables_use_group_matrices_with_the_values_of_scipy_pair_by_pair(monkeypatch):
    rng = np.random.default_rng(1)
    seeds = toy_analysis.KENDALL_MATRIX_MIN_RUNS // 2
    keys = [(c, n, seed) for c in ("lrp", "weight") for n in (1, 5) for seed in range(seeds)]
    records = [toy_log.LogRecord("moon", c, 2 * n, seed, "rankselection", "pre", rng.permutation(40).tolist())
               for c, n, seed in keys]
    computed = []
    matrix = toy_analysis.kendall_tau_matrix
    monkeypatch.setattr(toy_analysis, "kendall_tau_matrix", lambda ranks: computed.append(len(ranks)) or matrix(ranks))
    with_matrices = toy_analysis.rank_tables(records, "moon")
    assert computed == [2 * seeds] * 4  # per sample size, then per criterion
    monkeypatch.setattr(toy_analysis, "KENDALL_MATRIX_MIN_RUNS", 10 ** 9)  # every pair by scipy, on demand
    assert toy_analysis.rank_tables(records, "moon") == with_matrices
    assert computed == [2 * seeds] * 4
