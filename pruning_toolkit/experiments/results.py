"""Table and plot of a pruning experiment: test accuracy against the kept fraction, one line per method.

    python examples/plot_results.py examples/results/results.csv [--out DIR]

Reads the ``results.csv`` written by prune_example_msd.py / prune_example_resnet50.py and writes,
next to it (or into ``--out``), ``results.md`` (a markdown table, one row per pruning step) and
``accuracy_vs_kept.svg`` / ``.png`` (log x-axis). With several seeds (``--seeds``): the mean over
the seeds, +- their standard deviation in the table, a band in the plot. Needs no torch.
"""
import csv
import json
import sys
from pathlib import Path

from pruning_toolkit.cli import OneLineErrorParser
from pruning_toolkit.files import write_atomically

RESULT_FIELDS = ("method", "step", "target_kept", "kept_fraction", "test_accuracy", "train_loss",
                 "seconds", "model_file")
SEEDED_FIELDS = RESULT_FIELDS + ("seed",)     # results.csv since --seeds; files without it are seed 0
LAYOUTS = (SEEDED_FIELDS, RESULT_FIELDS)
TABLE_NAME = "results.md"
PLOT_STEM = "accuracy_vs_kept"
METHOD_ORDER = ("LEAN", "indivL1", "indivSV")
DEFAULT_TITLE = "Test accuracy while pruning"


def read_results(csv_path):
    """{method: [row, ...] sorted by step and seed}; numbers parsed. ValueError for a file of another layout."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"results file not found: {csv_path}")
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in RESULT_FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: not a pruning results file (missing columns {missing})")
        results = {}
        for line_number, row in enumerate(reader, start=2):
            try:
                parsed = dict(row, step=int(row["step"]), seed=int(row.get("seed") or 0),
                              **{k: float(row[k]) for k in ("target_kept", "kept_fraction", "test_accuracy")})
            except (TypeError, ValueError):
                raise ValueError(f"{csv_path}, line {line_number}: malformed row {row}") from None
            results.setdefault(row["method"], []).append(parsed)
    if not results:
        raise ValueError(f"{csv_path}: holds no results yet")
    for rows in results.values():
        rows.sort(key=lambda r: (r["step"], r["seed"]))
    return dict(sorted(results.items(), key=lambda item: _method_rank(item[0])))


def _method_rank(method):
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def by_step(rows):
    """[(step, target kept, mean kept, mean accuracy, std of accuracy, seeds)] of one method's rows."""
    import numpy as np
    steps = {}
    for row in rows:
        steps.setdefault((row["step"], row["target_kept"]), []).append(row)
    return [(step, target, float(np.mean([r["kept_fraction"] for r in group])),
             float(np.mean([r["test_accuracy"] for r in group])), float(np.std([r["test_accuracy"] for r in group])),
             len(group)) for (step, target), group in sorted(steps.items())]


def markdown_table(results):
    """One row per step: the schedule's target, then each method's measured kept fraction and accuracy."""
    from prettytable import PrettyTable
    try:
        from prettytable import TableStyle
        markdown = TableStyle.MARKDOWN
    except ImportError:  # prettytable < 3.12
        from prettytable import MARKDOWN as markdown
    table = PrettyTable()
    table.set_style(markdown)
    methods = list(results)
    table.field_names = ["step", "target kept"] + [f"{m} {what}" for m in methods for what in ("kept", "acc")]
    steps = {}
    for method, rows in results.items():
        for step, target, kept, accuracy, spread, seeds in by_step(rows):
            cell = f"{accuracy:.4f}" if seeds == 1 else f"{accuracy:.4f} ± {spread:.4f} ({seeds} seeds)"
            steps.setdefault((step, target), {})[method] = [f"{kept:.4f}", cell]
    for (step, target), cells in sorted(steps.items()):
        table.add_row([step, f"{target:.4f}"] + [value for method in methods for value in cells.get(method, ["", ""])])
    table.align = "r"
    return table.get_string() + "\n"


def plot_accuracy(results, paths, title=DEFAULT_TITLE):
    """Accuracy against the measured kept fraction (log x), one line per method; saved to every path."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(6, 4.3))
    axes = figure.subplots()
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-.")]  # coinciding lines stay visible
    for index, (method, rows) in enumerate(results.items()):
        marker, line = styles[index % len(styles)]
        _, _, kept, accuracy, spread, seeds = zip(*by_step(rows))
        drawn = axes.plot(kept, accuracy, marker=marker, linestyle=line, markersize=4, markerfacecolor="none",
                          label=method if max(seeds) == 1 else f"{method} (mean, ± std over {max(seeds)} seeds)")
        if max(seeds) > 1:
            low = [a - s for a, s in zip(accuracy, spread)]
            high = [a + s for a, s in zip(accuracy, spread)]
            axes.fill_between(kept, low, high, color=drawn[0].get_color(), alpha=0.2, linewidth=0)
    axes.set_xscale("log")
    axes.set_xlabel("fraction of convolutions kept")
    axes.set_ylabel("test pixel accuracy")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    for path in paths:
        write_atomically(path, lambda temporary: save_reproducibly(figure, temporary))


def save_reproducibly(figure, path):
    """Save ``figure`` so that the same data give the same bytes (no date, fixed SVG ids)."""
    import matplotlib
    svg = str(path).endswith(".svg")
    with matplotlib.rc_context({"svg.hashsalt": "pruning-toolkit"}):
        figure.savefig(path, dpi=150, format="svg" if svg else "png", metadata={"Date": None} if svg else None)


def recorded_title(csv_path):
    """The plot title stored in the run.json beside ``csv_path`` (how the run was made), if any."""
    record = Path(csv_path).parent / "run.json"
    try:
        return json.loads(record.read_text()).get("title") or DEFAULT_TITLE
    except (OSError, ValueError, AttributeError):
        return DEFAULT_TITLE


def write_summary(csv_path, out_dir=None, title=None):
    """Write the table and the plots of ``csv_path`` into ``out_dir`` (its folder by default);
    ``title`` None: the one its run.json records."""
    csv_path = Path(csv_path)
    out_dir = csv_path.parent if out_dir is None else Path(out_dir)
    title = recorded_title(csv_path) if title is None else title
    results = read_results(csv_path)
    table = markdown_table(results)
    written = [write_atomically(out_dir / TABLE_NAME, lambda temporary: temporary.write_text(table))]
    plots = [out_dir / f"{PLOT_STEM}.svg", out_dir / f"{PLOT_STEM}.png"]
    plot_accuracy(results, plots, title)
    return written + plots


def main(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_csv", type=Path, help="results.csv of a pruning run")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the CSV's folder)")
    parser.add_argument("--title", default=None, help="plot title (default: the one run.json records)")
    args = parser.parse_args(argv)
    try:
        written = write_summary(args.results_csv, args.out, args.title)
    except (OSError, ValueError) as error:
        print(f"plot_results.py: {error}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
