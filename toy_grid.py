"""Many toy pruning runs in one command: the grid of datasets x criteria x samples per class x seeds.

``python main.py -d all -c all -n all -s 0-49`` runs the paper's 4800 runs in one process tree:
the models and training sets are loaded and evaluated once, worker processes (one torch thread
each) run the rest, and the parent appends each run's lines to the log as it finishes. Runs the
log already holds are skipped, so a killed grid continues where it stopped when started again.
"""
import itertools
import multiprocessing
import os
import re
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

import toy_datasets
import toy_log
import toy_sweep

ALL = "all"
SEED_LIMIT = 2 ** 32
_NUMBER = re.compile(r"\d+")
_RANGE = re.compile(r"(\d+)-(\d+)")


# ---------------------------------------------------------------------------------------------
# the list syntax of -d, -c, -n and -s
# ---------------------------------------------------------------------------------------------

def is_grid_value(text):
    """Whether a flag's text asks for several values: ``all``, a comma list or a range ``a-b``."""
    text = str(text).strip()
    return text == ALL or "," in text or _RANGE.fullmatch(text) is not None


def _items(text, flag):
    items = [item.strip() for item in str(text).split(",")]
    if not all(items):
        raise ValueError(f"{flag}: empty item in {text!r}")
    return items


def _unique(values):
    return tuple(dict.fromkeys(values))


def parse_names(text, choices, flag):
    """``moon,circle`` or ``all`` -> a tuple of names from ``choices``, in the order given."""
    if str(text).strip() == ALL:
        return tuple(choices)
    names = _items(text, flag)
    for name in names:
        if name not in choices:
            raise ValueError(f"{flag}: unknown value {name!r}; choices: {', '.join(choices)} (or a comma list, "
                             f"or {ALL})")
    return _unique(names)


def parse_integers(text, flag, minimum, limit, all_values):
    """``1,2,5``, ``0-49``, ``0-9,20`` or ``all`` (``all_values``) -> a tuple of integers in
    ``[minimum, limit)``, in the order given, without repeats."""
    if str(text).strip() == ALL:
        return tuple(all_values)
    values = []
    for item in _items(text, flag):
        bounds = _RANGE.fullmatch(item)
        if bounds:
            first, last = int(bounds[1]), int(bounds[2])
            if first > last:
                raise ValueError(f"{flag}: range {item!r} runs backwards")
        elif _NUMBER.fullmatch(item):
            first = last = int(item)
        else:
            raise ValueError(f"{flag}: {item!r} is not a whole number, a list (1,2,5) or a range (0-49)")
        if first < minimum:
            raise ValueError(f"{flag} must be at least {minimum}, got {first}")
        if last >= limit:
            raise ValueError(f"{flag} must be below {limit}, got {last}")
        values.extend(range(first, last + 1))
    return _unique(values)


@dataclass(frozen=True)
class GridRun:
    """One run of the grid; ``key`` names its lines in the log."""
    dataset: str
    criterion: str
    samples_per_class: int
    seed: int

    @property
    def key(self):
        total = self.samples_per_class * toy_datasets.NUM_CLASSES[self.dataset]
        return toy_log.run_key(self.dataset, self.criterion, total, self.seed)


def grid_runs(datasets, criteria, samples_per_class, seeds):
    """The cartesian product, in the generated scripts' order (dataset, criterion, samples, seed)."""
    return [GridRun(*values) for values in itertools.product(datasets, criteria, samples_per_class, seeds)]


def parse_grid(dataset, criterion, numsamples, seed):
    """The runs that the four flags' texts select (each a single value, a list, a range or ``all``)."""
    return grid_runs(parse_names(dataset, toy_datasets.DATASETS, "--dataset"),
                     parse_names(criterion, toy_log.CRITERIA, "--criterion"),
                     parse_integers(numsamples, "--numsamples", 1, SEED_LIMIT, toy_sweep.SAMPLES_PER_CLASS),
                     parse_integers(seed, "--seed", 0, SEED_LIMIT, toy_sweep.SEEDS))


# ---------------------------------------------------------------------------------------------
# running the grid
# ---------------------------------------------------------------------------------------------

def default_jobs():
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def one_torch_thread(device):
    """On CPU, run torch on one thread inside (the toy model is too small to gain from more, and
    grid workers then share the cores instead of fighting over them); restored after."""
    import torch
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class GridSummary:
    """What a grid did: runs asked for, found complete in the log, run now, and the time taken."""
    requested: int
    skipped: int
    done: int
    seconds: float


_WORKER = {}


def _start_worker(prepared, options, ignore_interrupt):
    """Give this process what every run needs (the prepared datasets and the run options)."""
    import torch
    if ignore_interrupt:  # Ctrl-C reaches the whole process group; the parent alone handles it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _WORKER.update(prepared=prepared, options=options)


def _run_in_worker(run):
    import toy_pruning
    result = toy_pruning.run(_WORKER["prepared"][run.dataset], run.criterion, run.samples_per_class, run.seed,
                             **_WORKER["options"])
    return run, result.lines


def _pool_context():
    """fork where the platform has it (workers inherit the prepared models), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def pending_runs(runs, log, rank_log=False):
    """The runs whose lines the log (an open :class:`toy_log.AppendLog`) does not all hold yet."""
    entries = log.entries()
    needed = toy_log.run_entries(rank_log)
    return [run for run in runs if not needed <= entries.get(run.key, frozenset())]


def run_grid(runs, log_path, device="cpu", jobs=1, noisy_sigma=0.0, rank_log=False, prepared=None,
             progress=False, count=None):
    """Run every run of ``runs`` that the log at ``log_path`` does not hold yet; append its lines.

    ``jobs`` worker processes (1: in this process) share the datasets prepared once (``prepared``:
    ``{dataset: toy_pruning.PreparedDataset}``, loaded from the shipped files when not given).
    Each run's lines are appended as one block as it finishes, only those the log still lacks,
    so a resumed or concurrent grid never duplicates a line. ``count`` neurons are pruned per run
    (default: the paper's 1000). Returns a :class:`GridSummary`.
    """
    import torch
    import toy_pruning
    from tqdm import tqdm

    start = time.perf_counter()
    device = torch.device(device)
    with toy_log.AppendLog(log_path) as log, one_torch_thread(device):
        todo = pending_runs(runs, log, rank_log)
        if not todo:
            return GridSummary(len(runs), len(runs), 0, time.perf_counter() - start)
        prepared = dict(prepared or {})
        for dataset in dict.fromkeys(run.dataset for run in todo):
            if dataset not in prepared:
                prepared[dataset] = toy_pruning.prepare(dataset, device)
        jobs = 1 if device.type == "cuda" else max(1, min(jobs, len(todo)))
        options = dict(noisy_sigma=noisy_sigma, rank_log=rank_log,
                       count=toy_pruning.PRUNED_NEURONS if count is None else count)
        done = 0
        with tqdm(total=len(todo), unit="run", disable=not progress, smoothing=0.05) as bar:
            for _, lines in _results(todo, prepared, options, jobs):
                log.append_missing(lines)
                done += 1
                bar.update()
    return GridSummary(len(runs), len(runs) - len(todo), done, time.perf_counter() - start)


def _results(todo, prepared, options, jobs):
    """``(run, lines)`` for every run of ``todo``, in order."""
    if jobs == 1:
        _start_worker(prepared, options, ignore_interrupt=False)
        try:
            yield from map(_run_in_worker, todo)
        finally:
            _WORKER.clear()
        return
    pool = _pool_context().Pool(jobs, initializer=_start_worker,
                                initargs=(prepared, options, True))
    try:
        yield from pool.imap(_run_in_worker, todo, chunksize=max(1, min(8, len(todo) // (4 * jobs))))
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def figure_runs(runs, log_path, device="cpu", noisy_sigma=0.0, prepared=None, count=None):
    """Run ``runs`` in this process for a figure: ``[(dataset, training X, [(criterion, RunResult)])]``
    per dataset, in order. The runs' lines the log does not hold yet are appended to it."""
    import torch
    import toy_pruning
    device = torch.device(device)
    prepared = dict(prepared or {})
    count = toy_pruning.PRUNED_NEURONS if count is None else count
    rows = {}
    with toy_log.AppendLog(log_path) as log:
        for run in runs:
            with one_torch_thread(device):
                if run.dataset not in prepared:
                    prepared[run.dataset] = toy_pruning.prepare(run.dataset, device)
                result = toy_pruning.run(prepared[run.dataset], run.criterion, run.samples_per_class, run.seed,
                                         noisy_sigma=noisy_sigma, count=count)
            log.append_missing(result.lines)
            rows.setdefault(run.dataset, []).append((run.criterion, result))
    return [(dataset, prepared[dataset].train_X.cpu(), results) for dataset, results in rows.items()]
