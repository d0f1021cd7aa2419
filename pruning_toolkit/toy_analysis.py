"""Analysis of toy-experiment logs: accuracy plots, rank/set tables, decision-boundary figures.

Everything here reads logs or draws; nothing prunes. Figures go next to the analysed log.
"""
import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np

from pruning_toolkit import files
from pruning_toolkit.toy_vocabulary import CRITERIA, DATASETS, RANK_SCENARIO, SAMPLES_PER_CLASS, SCENARIOS, SET_SIZES

CRITERION_COLOURS = {"weight": "black", "taylor": "blue", "grad": "green", "lrp": "red"}
KENDALL_MATRIX_MIN_RUNS = 24
GRID_STEPS = 200
GRID_MARGIN = 0.1


SVG_HASH_SALT = "pruning-toolkit-toy-analysis"


def _pyplot():
    import matplotlib.pyplot as plt  # imported on use: slow, and only needed for figures
    return plt


def save_figure(figure, path, **options):
    """Save ``figure`` to ``path`` (format from its suffix) atomically and reproducibly.

    The figure goes to a temporary file in the same folder, renamed over ``path`` once complete,
    so a failed save (a full disk) leaves the previous file. SVGs get no date and ids from a
    fixed salt, so an unchanged figure is saved byte for byte the same. Returns ``path``.
    """
    import matplotlib
    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    metadata = {"Date": None} if kind == "svg" else None
    with matplotlib.rc_context({"svg.hashsalt": SVG_HASH_SALT}):
        return files.write_atomically(
            path, lambda temporary: figure.savefig(temporary, format=kind, metadata=metadata, **options))


def _noise_title(figure, noisy_sigma):
    if noisy_sigma > 0:
        figure.suptitle(f"test noise sigma = {noisy_sigma:g}")


# ---------------------------------------------------------------------------------------------
# accuracy plots
# ---------------------------------------------------------------------------------------------

def accuracy_statistics(records):
    """``{(dataset, scenario): {curve: {samples_per_class: (mean, std, count)}}}`` for the plots.

    ``curve`` is a criterion (accuracy after pruning) or ``"unpruned"`` (all ``pre`` lines).
    """
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in records:
        if record.scenario not in SCENARIOS:
            continue
        curve = "unpruned" if record.stage == "pre" else record.criterion
        values[(record.dataset, record.scenario)][curve][record.samples_per_class].append(record.value)
    return {panel: {curve: {n: (float(np.mean(v)), float(np.std(v)), len(v)) for n, v in sorted(points.items())}
                    for curve, points in curves.items()}
            for panel, curves in values.items()}


def _curve_order(curves):
    return [c for c in ("unpruned",) + CRITERIA if c in curves]


CRITERION_MARKERS = {"weight": "s", "taylor": "^", "grad": "v", "lrp": "o"}
UNPRUNED_COLOUR = "0.45"
BAND_NOTE = "lines: mean over the seeds; shaded: mean ± 1 std"


def draw_accuracy_panel(axes, dataset, scenario, curves, legend=True):
    """One panel: a line with a +-1 std band (over the seeds) per criterion, the unpruned model
    dashed grey on top (its dashes let a criterion that coincides with it show), log x axis;
    the legend below the axes, where it covers no curve."""
    for curve in _curve_order(curves):
        points = curves[curve]
        x = np.array(list(points))
        mean = np.array([points[n][0] for n in x])
        std = np.array([points[n][1] for n in x])
        unpruned = curve == "unpruned"
        colour = UNPRUNED_COLOUR if unpruned else CRITERION_COLOURS[curve]
        axes.fill_between(x, mean - std, np.minimum(mean + std, 100.0), color=colour, alpha=0.15, linewidth=0)
        axes.plot(x, mean, linestyle="--" if unpruned else "-", color=colour, linewidth=1.2 if unpruned else 1.5,
                  marker=None if unpruned else CRITERION_MARKERS[curve], markersize=4, markerfacecolor="none",
                  zorder=4 if unpruned else 3, label="no pruning" if unpruned else curve)
    all_x = sorted({n for points in curves.values() for n in points})
    axes.set_xscale("log")
    axes.set_xticks([t for t in SAMPLES_PER_CLASS if all_x[0] <= t <= all_x[-1]] or all_x)
    axes.set_xticklabels([str(t) for t in axes.get_xticks().astype(int)])
    axes.minorticks_off()
    if all_x[0] < all_x[-1]:
        axes.set_xlim(all_x[0], all_x[-1])
    axes.xaxis.grid(True, which="major")
    axes.set_title(f"{dataset}, on {scenario} data")
    axes.set_xlabel("reference samples per class")
    axes.set_ylabel("accuracy after pruning in %")
    if legend:
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize="small", frameon=False,
                    title=BAND_NOTE, title_fontsize="x-small")


def _ordered_panels(statistics):
    datasets = [d for d in DATASETS if any(p[0] == d for p in statistics)]
    return [(d, s) for d in datasets for s in SCENARIOS if (d, s) in statistics]


def means_table(dataset, scenario, curves):
    """The plotted means as a plain-text table (rows: curves, columns: samples per class)."""
    from prettytable import PrettyTable
    columns = sorted({n for points in curves.values() for n in points})
    table = PrettyTable()
    table.field_names = [f"{dataset}/{scenario}"] + [str(n) for n in columns]
    for curve in _curve_order(curves):
        points = curves[curve]
        table.add_row([curve] + [f"{points[n][0]:.2f}" if n in points else "" for n in columns])
    return table.get_string()


def write_accuracy_plots(records, out_dir, show=False, noisy_sigma=0.0):
    """Write ``DATASET-SCENARIO.svg`` per panel and ``combined.svg``/``.png`` into ``out_dir``.

    ``noisy_sigma`` > 0 (the log's test noise) is named in every figure's title and above the
    means. Returns ``(paths written, text of the means the plots show)``.
    """
    statistics = accuracy_statistics(records)
    if not statistics:
        raise ValueError("the log holds no accuracy lines (scenario train or test); "
                         "rank logs are analysed with --ranklog")
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = _ordered_panels(statistics)
    written, summaries = [], []
    for dataset, scenario in panels:
        figure, axes = plt.subplots(figsize=(4, 4.8), constrained_layout=True)
        draw_accuracy_panel(axes, dataset, scenario, statistics[(dataset, scenario)])
        _noise_title(figure, noisy_sigma)
        written.append(save_figure(figure, out_dir / f"{dataset}-{scenario}.svg"))
        summaries.append(means_table(dataset, scenario, statistics[(dataset, scenario)]))
        if not show:
            plt.close(figure)
    written += _write_combined_figure(plt, statistics, panels, out_dir, noisy_sigma)
    if show:
        plt.show()
    plt.close("all")
    if noisy_sigma > 0:
        summaries.insert(0, f"test noise sigma = {noisy_sigma:g}")
    return written, "\n\n".join(summaries)


def _write_combined_figure(plt, statistics, panels, out_dir, noisy_sigma=0.0):
    """The paper's performance figure: rows train/test, columns datasets."""
    datasets = list(dict.fromkeys(d for d, _ in panels))
    scenarios = [s for s in SCENARIOS if any(p[1] == s for p in panels)]
    figure, grid = plt.subplots(len(scenarios), len(datasets), squeeze=False,
                                figsize=(3.5 * len(datasets), 3.5 * len(scenarios) + 0.6), constrained_layout=True)
    for row, scenario in enumerate(scenarios):
        for column, dataset in enumerate(datasets):
            if (dataset, scenario) in statistics:
                draw_accuracy_panel(grid[row][column], dataset, scenario, statistics[(dataset, scenario)], legend=False)
            else:
                grid[row][column].set_axis_off()
    handles = {}
    for axes in figure.axes:   # one legend for all panels, outside them
        for handle, label in zip(*axes.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=len(handles),
                  frameon=False, title=BAND_NOTE, title_fontsize="small")
    _noise_title(figure, noisy_sigma)
    return [save_figure(figure, out_dir / name, dpi=150) for name in ("combined.svg", "combined.png")]


# ---------------------------------------------------------------------------------------------
# rank correlation and set overlap tables
# ---------------------------------------------------------------------------------------------

class RankComparison:
    """Pairwise similarity of the neuron orders of many runs of one dataset.

    Spearman and Kendall-tau are computed on the rank each run gives every neuron (the inverse
    of the logged argsort); set overlap of the first (last) k is ``|A_k & B_k| / k``.
    """

    def __init__(self, orders):
        from scipy import stats
        self._stats = stats
        self.orders = np.asarray(orders, dtype=np.int64)
        runs, neurons = self.orders.shape
        self.ranks = np.empty_like(self.orders)
        self.ranks[np.arange(runs)[:, None], self.orders] = np.arange(neurons)[None, :]
        self.set_sizes = [k for k in SET_SIZES if k <= neurons]
        self.measures = ["spearman", "kendalltau"] + [f"{end}-{k}" for k in self.set_sizes
                                                      for end in ("first", "last")]
        self._matrices = {"spearman": self._spearman_matrix()}
        for k in self.set_sizes:
            self._matrices[f"first-{k}"] = self._overlap_matrix(self.orders[:, :k], neurons) / k
            self._matrices[f"last-{k}"] = self._overlap_matrix(self.orders[:, -k:], neurons) / k
        self._kendall = {}

    def _spearman_matrix(self):
        runs = len(self.ranks)
        if runs == 1:
            return np.ones((1, 1))
        result = self._stats.spearmanr(self.ranks, axis=1).statistic
        return np.array([[1.0, result], [result, 1.0]]) if runs == 2 else np.asarray(result)

    @staticmethod
    def _overlap_matrix(selected, neurons):
        membership = np.zeros((len(selected), neurons), dtype=np.float32)
        membership[np.arange(len(selected))[:, None], selected] = 1.0
        return membership @ membership.T

    def kendall(self, a, b):
        if a == b:
            return 1.0
        pair = (min(a, b), max(a, b))
        if pair not in self._kendall:
            self._kendall[pair] = float(self._stats.kendalltau(self.ranks[pair[0]], self.ranks[pair[1]]).statistic)
        return self._kendall[pair]

    def precompute_kendall(self, groups, progress=False):
        """Kendall-tau of every two runs inside each group of run indices, as a matrix per group
        (:func:`kendall_tau_matrix`) for groups of at least ``KENDALL_MATRIX_MIN_RUNS`` runs; scipy,
        one pair at a time, would take about an hour for the ~1.3 million pairs of a full grid."""
        from tqdm import tqdm
        for group in tqdm(groups, desc="kendall-tau groups", leave=False, disable=not progress):
            group = np.asarray(sorted(set(group)), dtype=np.int64)
            if len(group) < KENDALL_MATRIX_MIN_RUNS:  # cheaper pair by pair, on demand
                continue
            matrix = kendall_tau_matrix(self.ranks[group])
            first, second = np.triu_indices(len(group), 1)
            self._kendall.update(zip(zip(group[first].tolist(), group[second].tolist()),
                                     matrix[first, second].tolist()))

    def values(self, measure, pairs):
        if measure == "kendalltau":
            return [self.kendall(a, b) for a, b in pairs]
        matrix = self._matrices[measure]
        return [float(matrix[a, b]) for a, b in pairs]


def kendall_tau_matrix(ranks, chunk_columns=1 << 15):
    """Kendall-tau between every two rows of ``ranks`` (each a permutation of 0..n-1: no ties).

    With S_r = (sign(r_i - r_j) for all neuron pairs i < j), tau(a, b) = <S_a, S_b> / (n(n-1)/2):
    a Gram matrix, built from chunks of about ``chunk_columns`` neuron pairs with one BLAS matrix
    product each. The chunks' sums are integers below 2**24, exact in float32.
    """
    import torch
    ranks = torch.as_tensor(np.asarray(ranks), dtype=torch.float32)
    runs, neurons = ranks.shape
    if neurons < 2:
        raise ValueError(f"Kendall-tau needs at least 2 ranked neurons, got {neurons}")
    total = torch.zeros((runs, runs), dtype=torch.float64)
    signs = torch.empty((runs, chunk_columns + neurons), dtype=torch.float32)
    filled = 0
    for i in range(neurons - 1):  # the pairs (i, j > i), one row at a time into the chunk
        torch.sub(ranks[:, i:i + 1], ranks[:, i + 1:], out=signs[:, filled:filled + neurons - 1 - i])
        filled += neurons - 1 - i
        if filled >= chunk_columns or i == neurons - 2:
            chunk = signs[:, :filled].sign_()
            total += (chunk @ chunk.T).double()
            filled = 0
    return (total / (neurons * (neurons - 1) / 2)).numpy()


def _cell(values):
    return f"{np.mean(values):.3f}+-{np.std(values):.3f}" if values else "n/a"


def _header(text):
    text = f"# {text}".upper()
    return "\n".join(["#" * len(text), text, "#" * len(text)]) + "\n\n\n"


def _matrix_tables(comparison, row_labels, column_labels, pairs_for, name_for_measure, diagonal_only=False):
    """One table per measure; cell (row, column) aggregates the run pairs ``pairs_for(row, column)``."""
    from prettytable import PrettyTable
    cells = {(i, j): pairs_for(row, column)
             for i, row in enumerate(row_labels) for j, column in enumerate(column_labels)
             if not diagonal_only or i == j}
    tables = []
    for measure in comparison.measures:
        table = PrettyTable()
        table.field_names = [name_for_measure(measure)] + [str(c) for c in column_labels]
        for i, row in enumerate(row_labels):
            table.add_row([str(row)] + [_cell(comparison.values(measure, cells[(i, j)])) if (i, j) in cells else ""
                                        for j in range(len(column_labels))])
        tables.append(table.get_string() + "\n\n")
    return "".join(tables)


def rank_tables(records, dataset, progress=False):
    """The plain-text rank/set tables of cases 1-5 for ``dataset`` (``records``: rankselection records).

    Case 1: each criterion against itself, different seeds. Case 2: every criterion pair over all
    seed pairs (a criterion against itself only on the same seed). Case 3: every pair, same seed.
    Case 4: each criterion against itself across sample sizes, all seed pairs. Case 5: the same,
    same seed only. Each cell is mean+-std over the pairs.
    """
    runs = {}
    for record in records:
        if record.dataset == dataset and record.scenario == RANK_SCENARIO:
            runs.setdefault((record.criterion, record.samples_per_class, record.seed), record.value)
    if not runs:
        raise ValueError(f"the log holds no rankselection lines for dataset {dataset}")
    lengths = {len(order) for order in runs.values()}
    if len(lengths) != 1:
        raise ValueError(f"rankselection lines of {dataset} rank different numbers of neurons: {sorted(lengths)}")
    keys = list(runs)
    index = {key: i for i, key in enumerate(keys)}
    comparison = RankComparison([runs[key] for key in keys])
    criteria = [c for c in CRITERIA if any(k[0] == c for k in keys)]
    sizes = sorted({k[1] for k in keys})
    seeds = sorted({k[2] for k in keys})

    def pairs(criterion_a, size_a, criterion_b, size_b, seed_rule):
        found = []
        for seed_a, seed_b in itertools.product(seeds, seeds):
            a, b = index.get((criterion_a, size_a, seed_a)), index.get((criterion_b, size_b, seed_b))
            if a is not None and b is not None and seed_rule(seed_a, seed_b):
                found.append((a, b))
        return found

    different_seed = lambda s, t: s != t  # noqa: E731
    same_seed = lambda s, t: s == t  # noqa: E731
    any_seed = lambda s, t: True  # noqa: E731

    # every pair the tables compare lies within one sample size or within one criterion
    comparison.precompute_kendall([[index[k] for k in keys if k[1] == size] for size in sizes]
                                  + [[index[k] for k in keys if k[0] == criterion] for criterion in criteria],
                                  progress)

    text = []
    for size in sizes:
        label = f"{dataset} n={size}"
        text.append(_header(f"{label} case 1: self-compare criteria across random seeds "
                            "-> check pruning consistency"))
        text.append(_matrix_tables(comparison, criteria, criteria,
                                   lambda a, b: pairs(a, size, b, size, different_seed), str, diagonal_only=True))
        text.append(_header(f"{label} case 2: cross-compare criteria across all random seeds "
                            "-> check relationship between criteria"))
        text.append(_matrix_tables(comparison, criteria, criteria,
                                   lambda a, b: pairs(a, size, b, size, same_seed if a == b else any_seed), str))
        text.append(_header(f"{label} case 3: cross-compare criteria, same random seeds only "
                            "-> check relationship between criteria wrt same data source"))
        text.append(_matrix_tables(comparison, criteria, criteria,
                                   lambda a, b: pairs(a, size, b, size, same_seed), str))
    for criterion in criteria:
        label = f"{dataset} and {criterion}"
        text.append(_header(f"{label} case 4: self-compare criteria across sample sizes (and random seeds) "
                            "-> check pruning consistency"))
        text.append(_matrix_tables(comparison, sizes, sizes,
                                   lambda m, n: pairs(criterion, m, criterion, n, any_seed),
                                   lambda measure: f"{criterion}:{measure}"))
        text.append(_header(f"{label} case 5: self-compare criteria across sample sizes (same seed only) "
                            "-> check pruning consistency"))
        text.append(_matrix_tables(comparison, sizes, sizes,
                                   lambda m, n: pairs(criterion, m, criterion, n, same_seed),
                                   lambda measure: f"{criterion}:{measure}"))
    return "".join(text)


def write_rank_tables(records, out_dir, progress=False):
    """Write ``rank_and_set-DATASET.txt`` for every dataset with rankselection lines; return the paths."""
    datasets = [d for d in DATASETS
                if any(r.dataset == d and r.scenario == RANK_SCENARIO for r in records)]
    if not datasets:
        raise ValueError("the log holds no rankselection lines; accuracy logs are analysed without --ranklog")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in datasets:
        text = rank_tables(records, dataset, progress)
        written.append(files.write_atomically(out_dir / f"rank_and_set-{dataset}.txt",
                                                lambda temporary: temporary.write_text(text, encoding="utf-8")))
    return written


# ---------------------------------------------------------------------------------------------
# decision regions
# ---------------------------------------------------------------------------------------------

def decision_grid(train_X, steps=GRID_STEPS, margin=GRID_MARGIN):
    """Grid axes spanning the training data plus ``margin``, ``steps`` points on the shorter side."""
    train_X = np.asarray(train_X)
    low, high = train_X.min(axis=0) - margin, train_X.max(axis=0) + margin
    spacing = (high - low).min() / (steps - 1)
    counts = np.round((high - low) / spacing).astype(int) + 1
    return np.linspace(low[0], high[0], counts[0]), np.linspace(low[1], high[1], counts[1])


def predict_grid(model, xs, ys, chunk=16384):
    """The class ``model`` predicts at every grid point, shape ``(len(ys), len(xs))``."""
    import torch
    parameter = next(model.parameters())
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = torch.as_tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1),
                             dtype=parameter.dtype, device=parameter.device)
    with torch.no_grad():
        predictions = torch.cat([model(points[i:i + chunk]).argmax(dim=1) for i in range(0, len(points), chunk)])
    return predictions.cpu().numpy().reshape(grid_x.shape)


def class_colours(colormap, num_classes):
    """``num_classes`` distinct colours from the matplotlib colormap named ``colormap``."""
    import matplotlib
    cmap = matplotlib.colormaps[colormap]
    if isinstance(cmap, matplotlib.colors.ListedColormap) and cmap.N >= num_classes:
        colours = list(cmap.colors)[:num_classes]
    else:
        colours = [cmap(v) for v in np.linspace(0.0, 1.0, num_classes)]
    return matplotlib.colors.ListedColormap(colours)


def draw_decision_regions(axes, xs, ys, predictions, X, y, cmap, num_classes, point_size=None):
    """Filled decision regions plus the points ``X`` coloured by their label ``y``."""
    X, y = np.asarray(X), np.asarray(y)
    levels = np.arange(num_classes + 1) - 0.5
    axes.contourf(xs, ys, predictions, levels=levels, cmap=cmap, alpha=0.35)
    size = point_size or (6 if len(X) > 200 else 30)
    axes.scatter(X[:, 0], X[:, 1], c=y, cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5, s=size,
                 edgecolors="black", linewidths=0.3)
    axes.set_xlim(xs[0], xs[-1])
    axes.set_ylim(ys[0], ys[-1])
    axes.set_aspect("equal")


def render_evaluations(evaluations, train_X, criterion, colormap, out_dir=None, show=False):
    """One figure per evaluation: decision regions and evaluated points, titled with stage, scenario,
    criterion and accuracy. Saved as ``<key>.svg`` in ``out_dir`` when given; shown when ``show``.
    """
    plt = _pyplot()
    xs, ys = decision_grid(train_X.cpu().numpy())
    predictions_of = {}
    written = []
    for evaluation in evaluations:
        model_id = id(evaluation.model)
        if model_id not in predictions_of:
            predictions_of[model_id] = predict_grid(evaluation.model, xs, ys)
        num_classes = int(evaluation.model[-1].out_features)
        cmap = class_colours(colormap, num_classes)
        figure, axes = plt.subplots(figsize=(5, 4), constrained_layout=True)
        draw_decision_regions(axes, xs, ys, predictions_of[model_id], evaluation.X.cpu().numpy(),
                              evaluation.y.cpu().numpy(), cmap, num_classes)
        axes.set_title(f"{evaluation.stage}-pruning, {evaluation.scenario} data, {criterion}: "
                       f"accuracy {evaluation.accuracy:.2f} %")
        if out_dir is not None:
            written.append(save_figure(figure, Path(out_dir) / f"{evaluation.key}.svg"))
        if not show:
            plt.close(figure)
    if show:
        plt.show()
        plt.close("all")
    return written


def qualitative_panels(results):
    """The panels of one row of the qualitative figure from ``[(criterion, RunResult)]`` of one dataset:
    training data and reference samples on the unpruned model's decision regions, then the regions
    after pruning with each criterion (with the reference samples), titled with training accuracies."""
    train, reference = results[0][1].evaluations[:2]
    panels = [(f"training data: {train.accuracy:.1f} %", train.model, train.X, train.y),
              (f"reference samples: {len(reference.y) // int(reference.model[-1].out_features)} per class",
               reference.model, reference.X, reference.y)]
    for criterion, result in results:
        pruned_train, pruned_test = result.evaluations[2:]
        panels.append((f"{criterion}: {pruned_train.accuracy:.1f} % (train)", pruned_test.model, pruned_test.X,
                       pruned_test.y))
    return panels


def write_qualitative_figure(rows, colormap, out_dir, name="qualitative"):
    """The paper's qualitative figure, one row per dataset (rows from ``toy_grid.figure_runs``).

    Every panel of a row shares the decision grid spanned by that row's training data. Writes
    ``NAME.svg`` and ``NAME.png`` into ``out_dir`` and returns their paths.
    """
    plt = _pyplot()
    panel_rows = [(dataset, np.asarray(train_X), qualitative_panels(results)) for dataset, train_X, results in rows]
    columns = max(len(panels) for _, _, panels in panel_rows)
    figure, grid = plt.subplots(len(rows), columns, squeeze=False, figsize=(2.6 * columns, 2.6 * len(rows)),
                                constrained_layout=True)
    for row, (dataset, train_X, panels) in enumerate(panel_rows):
        xs, ys = decision_grid(train_X)
        predictions_of = {}
        for column in range(columns):
            axes = grid[row][column]
            if column >= len(panels):
                axes.set_axis_off()
                continue
            title, model, X, y = panels[column]
            num_classes = int(model[-1].out_features)
            if id(model) not in predictions_of:
                predictions_of[id(model)] = predict_grid(model, xs, ys)
            draw_decision_regions(axes, xs, ys, predictions_of[id(model)], X.cpu().numpy(), y.cpu().numpy(),
                                  class_colours(colormap, num_classes), num_classes)
            axes.set_title(title, fontsize="small")
            axes.set_xticks([])
            axes.set_yticks([])
        grid[row][0].set_ylabel(dataset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [save_figure(figure, out_dir / f"{name}{suffix}", dpi=150) for suffix in (".svg", ".png")]
    plt.close(figure)
    return paths
