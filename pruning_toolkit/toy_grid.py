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
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from pruning_toolkit import toy_log
from pruning_toolkit.toy_vocabulary import (CRITERIA, DATASETS, NUM_CLASSES, PRUNED_NEURONS, SAMPLES_PER_CLASS, SEEDS,
                                            TRAINING_SAMPLES_PER_CLASS)

ALL = "all"
SEED_LIMIT = 2 ** 32  # numpy and sklearn take 32-bit seeds
MAX_GRID_RUNS = 1_000_000
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


def parse_integers(text, flag, minimum, limit, all_values, why="", max_count=None):
    """``1,2,5``, ``0-49``, ``0-9,20`` or ``all`` (``all_values``) -> a tuple of integers in
    ``[minimum, limit)``, in the order given, without repeats.

    Every bound is checked before a range is expanded: ``why`` (e.g. " (seeds are 32-bit)") says
    where ``limit`` comes from, and more than ``max_count`` values (default
    :data:`MAX_GRID_RUNS`) are refused.
    """
    max_count = MAX_GRID_RUNS if max_count is None else max_count
    if str(text).strip() == ALL:
        return tuple(all_values)
    values = {}
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
            raise ValueError(f"{flag} must be below {limit}{why}, got {last}")
        if last - first + 1 > max_count:  # before expanding: 0-4294967295 would be 4 billion integers
            raise ValueError(f"{flag}: {item!r} holds more than {max_count} values, more than a grid may run "
                             f"(at most {max_count} runs)")
        values.update(dict.fromkeys(range(first, last + 1)))
        if len(values) > max_count:
            raise ValueError(f"{flag}: {text!r} holds more than {max_count} values, more than a grid may run "
                             f"(at most {max_count} runs)")
    return tuple(values)


def samples_per_class_limit(datasets):
    """``(limit, why)``: samples per class must be below ``limit``, what the training sets of
    ``datasets`` hold per class (reference samples are drawn from the same distribution)."""
    per_class = {d: TRAINING_SAMPLES_PER_CLASS[d] for d in datasets}
    smallest = min(per_class, key=per_class.get)
    return per_class[smallest] + 1, (f" (at most {per_class[smallest]}: the {smallest} training set holds "
                                     f"{per_class[smallest]} samples per class)")


@dataclass(frozen=True)
class GridRun:
    """One run of the grid; ``key`` names its lines in the log."""
    dataset: str
    criterion: str
    samples_per_class: int
    seed: int

    @property
    def key(self):
        total = self.samples_per_class * NUM_CLASSES[self.dataset]
        return toy_log.run_key(self.dataset, self.criterion, total, self.seed)


def grid_runs(datasets, criteria, samples_per_class, seeds):
    """The cartesian product, in the generated scripts' order (dataset, criterion, samples, seed)."""
    return [GridRun(*values) for values in itertools.product(datasets, criteria, samples_per_class, seeds)]


def parse_grid(dataset, criterion, numsamples, seed):
    """The runs that the four flags' texts select (each a single value, a list, a range or ``all``);
    ValueError naming the flag when a value is out of bounds or the grid exceeds
    :data:`MAX_GRID_RUNS` runs, all checked before anything is expanded."""
    datasets = parse_names(dataset, DATASETS, "--dataset")
    criteria = parse_names(criterion, CRITERIA, "--criterion")
    limit, why = samples_per_class_limit(datasets)
    samples = parse_integers(numsamples, "--numsamples", 1, limit, SAMPLES_PER_CLASS, why)
    seeds = parse_integers(seed, "--seed", 0, SEED_LIMIT, SEEDS, f" (seeds are 0 to {SEED_LIMIT - 1})")
    count = len(datasets) * len(criteria) * len(samples) * len(seeds)
    if count > MAX_GRID_RUNS:
        raise ValueError(f"-d/-c/-n/-s select {count} runs ({len(datasets)} x {len(criteria)} x {len(samples)} x "
                         f"{len(seeds)}); a grid runs at most {MAX_GRID_RUNS}")
    return grid_runs(datasets, criteria, samples, seeds)


# ---------------------------------------------------------------------------------------------
# running the grid
# ---------------------------------------------------------------------------------------------

def default_jobs():
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
    if ignore_interrupt:  # a pool worker: Ctrl-C reaches the whole process group; the parent alone handles it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if hasattr(signal, "SIGTERM"):  # not the parent's handler: SIGTERM (Pool.terminate) ends a worker quietly
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    _WORKER.update(prepared=prepared, options=options)


def _run_in_worker(run):
    from pruning_toolkit import toy_run
    result = toy_run.run(_WORKER["prepared"][run.dataset], run.criterion, run.samples_per_class, run.seed,
                             **_WORKER["options"])
    return run, result.lines


def _pool_context():
    """fork where the platform has it (workers inherit the prepared models), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def log_sigma(noisy_sigma, rank_log=False):
    """The test noise a log records for runs with these options (None for rank logs: no test data)."""
    return None if rank_log else float(noisy_sigma)


def pending_runs(runs, log, rank_log=False):
    """The runs whose lines the log (an open :class:`toy_log.AppendLog`) does not all hold yet."""
    entries = log.entries()
    needed = toy_log.run_entries(rank_log)
    return [run for run in runs if not needed <= entries.get(run.key, frozenset())]


def run_grid(runs, log_path, device="cpu", jobs=1, noisy_sigma=0.0, rank_log=False, prepared=None,
             progress=False, count=None):
    """Run every run of ``runs`` that the log at ``log_path`` does not hold yet; append its lines.

    ``jobs`` worker processes (1: in this process) share the datasets prepared once (``prepared``:
    ``{dataset: toy_run.PreparedDataset}``, loaded from the shipped files when not given).
    Each run's lines are appended as one block as it finishes, only those the log still lacks,
    so a resumed or concurrent grid never duplicates a line. ``count`` neurons are pruned per run
    (default: the paper's 1000). Returns a :class:`GridSummary`.
    """
    import torch
    from tqdm import tqdm
    from pruning_toolkit import runtime, toy_run

    start = time.perf_counter()
    device = torch.device(device)
    with toy_log.AppendLog(log_path, log_sigma(noisy_sigma, rank_log)) as log, runtime.one_cpu_thread(device):
        todo = pending_runs(runs, log, rank_log)
        if not todo:
            return GridSummary(len(runs), len(runs), 0, time.perf_counter() - start)
        prepared = dict(prepared or {})
        for dataset in dict.fromkeys(run.dataset for run in todo):
            if dataset not in prepared:
                prepared[dataset] = toy_run.prepare(dataset, device)
        jobs = 1 if device.type == "cuda" else max(1, min(jobs, len(todo)))
        options = dict(noisy_sigma=noisy_sigma, rank_log=rank_log,
                       count=PRUNED_NEURONS if count is None else count)
        done = 0
        with tqdm(total=len(todo), unit="run", disable=not progress, smoothing=0.05) as bar:
            with closing(_results(todo, prepared, options, jobs)) as results:  # workers stop on any exit
                for _, lines in results:
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
    from pruning_toolkit import runtime, toy_run
    device = torch.device(device)
    prepared = dict(prepared or {})
    count = PRUNED_NEURONS if count is None else count
    rows = {}
    with toy_log.AppendLog(log_path, log_sigma(noisy_sigma)) as log:
        for run in runs:
            with runtime.one_cpu_thread(device):
                if run.dataset not in prepared:
                    prepared[run.dataset] = toy_run.prepare(run.dataset, device)
                result = toy_run.run(prepared[run.dataset], run.criterion, run.samples_per_class, run.seed,
                                         noisy_sigma=noisy_sigma, count=count)
            log.append_missing(result.lines)
            rows.setdefault(run.dataset, []).append((run.criterion, result))
    return [(dataset, prepared[dataset].train_X.cpu(), results) for dataset, results in rows.items()]


# ============================================================================================
# Grids as jobs (launcher): shards, merging, resubmission
# ============================================================================================

def shard_folder(job_folder):
    return Path(job_folder) / "shards"


def complete_shard_lines(path):
    """The complete, valid log lines of a job's shard (a torn last line of a killed job is left out)."""
    data = Path(path).read_bytes()
    data = data[:data.rfind(b"\n") + 1]
    lines = []
    for text in data.decode("utf-8", errors="replace").splitlines():
        try:
            toy_log.parse_line(text)
        except ValueError:
            continue
        lines.append(text)
    return lines


def merge_shards(log, job_folder):
    """Append to the open log every shard line it lacks; returns how many lines were added."""
    added = 0
    for shard in sorted(shard_folder(job_folder).glob("*.txt")):
        added += len(log.append_missing(complete_shard_lines(shard)))
    return added


def split_runs(runs, jobs):
    """``runs`` in ``jobs`` contiguous chunks of nearly equal size (a chunk keeps to few datasets)."""
    jobs = max(1, min(jobs, len(runs)))
    size, extra = divmod(len(runs), jobs)
    chunks, start = [], 0
    for index in range(jobs):
        end = start + size + (index < extra)
        chunks.append(runs[start:end])
        start = end
    return chunks


def run_shard(runs, shard_path, device, noisy_sigma, rank_log, workers):
    """One job: run ``runs`` into its own shard log (``workers`` processes)."""
    return run_grid(runs, shard_path, device, jobs=workers, noisy_sigma=noisy_sigma, rank_log=rank_log)


def launch_grid(runs, log_path, options, device="cpu", noisy_sigma=0.0, rank_log=False, jobs=1):
    """Run the runs the log lacks as ``jobs`` submitit jobs (``options``: the launcher flags).

    Each job writes a shard log; the shards are merged into the log (only lines it lacks), before
    anything is submitted and after the jobs end, so a later call with the same arguments collects
    what earlier jobs finished and submits only what is still missing. Returns a
    :class:`GridSummary`, or None when jobs were submitted and not waited for (``--no-wait``)."""
    from pruning_toolkit import launcher
    start = time.perf_counter()
    folder = Path(options.job_logs or f"{log_path}.jobs")
    sigma = log_sigma(noisy_sigma, rank_log)
    def collect():
        with toy_log.AppendLog(log_path, sigma) as log:
            merge_shards(log, folder)

    if not launcher.settle_earlier_jobs(folder, options.no_wait, collect, log_path):
        return None
    collect()
    with toy_log.AppendLog(log_path, sigma) as log:
        todo = pending_runs(runs, log, rank_log)
    if not todo:
        launcher.forget_submission(folder)
        return GridSummary(len(runs), len(runs), 0, time.perf_counter() - start)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    workers = options.slurm_cpus if options.launcher == "slurm" else 1
    arguments = [(chunk, shard_folder(folder) / f"{stamp}-{index:04d}.txt", str(device), noisy_sigma, rank_log,
                  workers) for index, chunk in enumerate(split_runs(todo, jobs))]
    shard_folder(folder).mkdir(parents=True, exist_ok=True)
    executor = launcher.make_executor(options, folder / "logs", "toy-grid")
    submitted = launcher.submit(executor, run_shard, arguments)
    launcher.record_submission(folder, options.launcher, submitted, str(log_path))
    print(f"submitted {len(submitted)} job(s) for {len(todo)} runs; logs in {folder / 'logs'}", file=sys.stderr)
    if options.no_wait:
        return None
    failed = launcher.follow(submitted)
    collect()
    with toy_log.AppendLog(log_path, sigma) as log:
        missing = len(pending_runs(runs, log, rank_log))
    if failed:
        raise launcher.JobsFailed(launcher.failure_message(failed))
    launcher.forget_submission(folder)
    return GridSummary(len(runs), len(runs) - len(todo), len(todo) - missing, time.perf_counter() - start)
