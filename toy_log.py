"""The toy experiment's log: its vocabulary, line format, whole-line appends and parsing.

One line per evaluation, e.g. ``dataset:moon-criterion:lrp-n:20-s:1-scenario:train-stage:pre 99.9``
(``n`` is the total number of reference samples), or, for rank logs, scenario ``rankselection``
with a JSON list of neuron indices as the value. Kept free of torch so the CLI starts fast.
"""
import json
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: appends in append mode, without a lock
    fcntl = None

import toy_datasets

DATASETS = toy_datasets.DATASETS
CRITERIA = ("lrp", "taylor", "grad", "weight")
SCENARIOS = ("train", "test")
RANK_SCENARIO = "rankselection"
STAGES = ("pre", "post")

_NAME = r"[A-Za-z0-9_.]+"
_KEY = re.compile(rf"(?P<run>dataset:{_NAME}-criterion:{_NAME}-n:\d+-s:\d+)"
                  rf"-scenario:(?P<scenario>{_NAME})-stage:(?P<stage>{_NAME})")
_TAIL_CHUNK = 1 << 16
_LINE = re.compile(
    rf"dataset:(?P<dataset>{_NAME})-criterion:(?P<criterion>{_NAME})-n:(?P<n>\d+)-s:(?P<seed>\d+)"
    rf"-scenario:(?P<scenario>{_NAME})-stage:(?P<stage>{_NAME}) (?P<value>\S+)"
)
LINE_FORMAT = "dataset:D-criterion:C-n:N-s:S-scenario:train|test|rankselection-stage:pre|post VALUE"


def format_key(dataset, criterion, total_samples, seed, scenario, stage):
    """The key that names one evaluation (also the stem of its decision-boundary SVG)."""
    return f"{run_key(dataset, criterion, total_samples, seed)}-scenario:{scenario}-stage:{stage}"


def format_accuracy_line(key, accuracy):
    return f"{key} {accuracy!r}"


def format_rank_line(key, order):
    """``order`` (a sequence of ints) as a JSON list without spaces."""
    return f"{key} {json.dumps([int(i) for i in order], separators=(',', ':'))}"


def run_key(dataset, criterion, total_samples, seed):
    """The part of a log key that names one run (its evaluations add scenario and stage)."""
    return f"dataset:{dataset}-criterion:{criterion}-n:{total_samples}-s:{seed}"


def run_entries(rank_log=False):
    """The (scenario, stage) pairs a complete run logs: four evaluations, or one rank selection."""
    if rank_log:
        return frozenset({(RANK_SCENARIO, "pre")})
    return frozenset((scenario, stage) for stage in STAGES for scenario in SCENARIOS)


def split_key(key):
    """``(run key, scenario, stage)`` of a log key; ValueError when it is not one."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"malformed log line (expected '{LINE_FORMAT}')")
    return match["run"], match["scenario"], match["stage"]


def append_lines(path, lines):
    """Append ``lines`` to the log at ``path`` as one block of whole lines (see :class:`AppendLog`).

    The log's folder is created when missing.
    """
    with AppendLog(path) as log:
        log.append(lines)


class AppendLog:
    """A log that many processes append to at once, in whole lines.

    Every append takes an exclusive lock on the file (``flock``, where the platform has it), cuts a
    torn final line (bytes after the last newline, left by a writer killed mid-write) and writes the
    whole block with one ``os.write`` in append mode. A line is complete only with its newline.
    :meth:`append_missing` also reads what other writers appended meanwhile and writes only the
    lines the log does not hold yet, so concurrent or resumed grids never duplicate a line.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._scanned_bytes = 0
        self._scanned_lines = 0
        self._entries = {}

    def close(self):
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @contextmanager
    def _locked(self):
        if fcntl is None:
            yield
            return
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def _cut_torn_line(self):
        """Truncate the file after its last newline; return the number of bytes cut."""
        size = os.fstat(self._descriptor).st_size
        complete = _complete_size(self._descriptor, size)
        if complete < size:
            os.ftruncate(self._descriptor, complete)
        return size - complete

    def _write(self, lines):
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        while data:
            written = os.write(self._descriptor, data)
            data = data[written:]

    def _scan(self):
        """Read the complete lines appended since the last scan and record their entries."""
        size = os.fstat(self._descriptor).st_size
        if size < self._scanned_bytes:
            raise ValueError(f"log file {self.path} shrank while it was in use")
        data = _read_at(self._descriptor, size - self._scanned_bytes, self._scanned_bytes)
        complete = data[:data.rfind(b"\n") + 1]
        for raw in complete.split(b"\n")[:-1]:
            self._scanned_lines += 1
            text = raw.split(b" ", 1)[0].decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                run, scenario, stage = split_key(text)
            except ValueError as error:
                raise ValueError(f"{self.path}, line {self._scanned_lines}: {error}") from None
            self._entries.setdefault(run, set()).add((scenario, stage))
        self._scanned_bytes += len(complete)

    def append(self, lines):
        """Append ``lines`` as one block, whatever the log holds."""
        with self._locked():
            self._cut_torn_line()
            self._write(lines)

    def entries(self):
        """``{run key: {(scenario, stage), ...}}`` of every complete line in the log (cutting a torn one)."""
        with self._locked():
            self._cut_torn_line()
            self._scan()
        return {run: frozenset(found) for run, found in self._entries.items()}

    def append_missing(self, lines):
        """Append, as one block, those of ``lines`` whose key the log does not hold yet; return them."""
        with self._locked():
            self._cut_torn_line()
            self._scan()
            missing, seen = [], set()
            for line in lines:
                run, scenario, stage = split_key(line.split(" ", 1)[0])
                if (scenario, stage) not in self._entries.get(run, ()) and (run, scenario, stage) not in seen:
                    missing.append(line)
                    seen.add((run, scenario, stage))
            if missing:
                self._write(missing)
        return missing


def check_writable(path):
    """Create the log's folder and make sure the log can be appended to; raise OSError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"log file {path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))


@dataclass(frozen=True)
class LogRecord:
    """One parsed log line; ``value`` is the accuracy in percent or, for rank logs, the neuron order."""
    dataset: str
    criterion: str
    total_samples: int
    seed: int
    scenario: str
    stage: str
    value: object

    @property
    def samples_per_class(self):
        return self.total_samples // toy_datasets.NUM_CLASSES[self.dataset]


def parse_line(text):
    """Parse one log line; raise ValueError saying what is wrong."""
    match = _LINE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"malformed log line (expected '{LINE_FORMAT}')")
    fields = match.groupdict()
    if fields["dataset"] not in DATASETS:
        raise ValueError(f"unknown dataset {fields['dataset']!r}")
    if fields["criterion"] not in CRITERIA:
        raise ValueError(f"unknown criterion {fields['criterion']!r}")
    classes = toy_datasets.NUM_CLASSES[fields["dataset"]]
    if int(fields["n"]) < classes or int(fields["n"]) % classes:
        raise ValueError(f"n:{fields['n']} is not a positive multiple of the {classes} classes "
                         f"of {fields['dataset']}")
    if fields["scenario"] not in SCENARIOS + (RANK_SCENARIO,):
        raise ValueError(f"unknown scenario {fields['scenario']!r}")
    if fields["stage"] not in STAGES:
        raise ValueError(f"unknown stage {fields['stage']!r}")
    value = _parse_rank(fields["value"]) if fields["scenario"] == RANK_SCENARIO else _parse_accuracy(fields["value"])
    return LogRecord(fields["dataset"], fields["criterion"], int(fields["n"]), int(fields["seed"]),
                     fields["scenario"], fields["stage"], value)


def _parse_accuracy(text):
    try:
        accuracy = float(text)
    except ValueError:
        raise ValueError(f"accuracy {text!r} is not a number") from None
    if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 100.0):
        raise ValueError(f"accuracy {text!r} is not a percentage")
    return accuracy


def _parse_rank(text):
    try:
        order = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("rank selection is not a JSON list") from None
    if not (isinstance(order, list) and all(isinstance(i, int) for i in order)):
        raise ValueError("rank selection is not a JSON list of integers")
    if sorted(order) != list(range(len(order))):
        raise ValueError("rank selection is not a permutation of the neuron indices")
    return order


def read_log(path):
    """All records of the log at ``path``, blank lines skipped.

    A final line without its newline is a torn write (or one still being written) and is left
    out, as :class:`AppendLog` would cut it. Raises FileNotFoundError when the log is missing and
    ValueError naming the file and line number of the first malformed line, or when the log
    holds no lines at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log file {path} not found")
    records = []
    with open(path, "rb") as log:
        for line_number, raw in enumerate(log, start=1):
            if not raw.endswith(b"\n"):
                break
            try:
                text = raw.decode("utf-8")
                if text.strip():
                    records.append(parse_line(text))
            except ValueError as error:  # UnicodeDecodeError is a ValueError too
                raise ValueError(f"{path}, line {line_number}: {error}") from None
    if not records:
        raise ValueError(f"log file {path} is empty: no log lines to analyze")
    return records


def torn_tail(path):
    """The bytes after the last newline of the log at ``path`` (a torn final line), or ``b""``."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(descriptor).st_size
        complete = _complete_size(descriptor, size)
        return _read_at(descriptor, size - complete, complete)
    finally:
        os.close(descriptor)


def _read_at(descriptor, count, offset):
    """``count`` bytes from ``offset`` (fewer at the end of the file)."""
    os.lseek(descriptor, offset, os.SEEK_SET)
    chunks = []
    while count > 0:
        chunk = os.read(descriptor, count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _complete_size(descriptor, size):
    """The length of the first ``size`` bytes of the file up to and including their last newline."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        newline = _read_at(descriptor, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
