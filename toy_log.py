"""The toy experiment's log: its vocabulary, line format, whole-line appends and parsing.

One line per evaluation, e.g. ``dataset:moon-criterion:lrp-n:20-s:1-scenario:train-stage:pre 99.9``
(``n`` is the total number of reference samples), or, for rank logs, scenario ``rankselection``
with a JSON list of neuron indices as the value. Kept free of torch so the CLI starts fast.
"""
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import toy_datasets

DATASETS = toy_datasets.DATASETS
CRITERIA = ("lrp", "taylor", "grad", "weight")
SCENARIOS = ("train", "test")
RANK_SCENARIO = "rankselection"
STAGES = ("pre", "post")

_NAME = r"[A-Za-z0-9_.]+"
_LINE = re.compile(
    rf"dataset:(?P<dataset>{_NAME})-criterion:(?P<criterion>{_NAME})-n:(?P<n>\d+)-s:(?P<seed>\d+)"
    rf"-scenario:(?P<scenario>{_NAME})-stage:(?P<stage>{_NAME}) (?P<value>\S+)"
)
LINE_FORMAT = "dataset:D-criterion:C-n:N-s:S-scenario:train|test|rankselection-stage:pre|post VALUE"


def format_key(dataset, criterion, total_samples, seed, scenario, stage):
    """The key that names one evaluation (also the stem of its decision-boundary SVG)."""
    return (f"dataset:{dataset}-criterion:{criterion}-n:{total_samples}-s:{seed}"
            f"-scenario:{scenario}-stage:{stage}")


def format_accuracy_line(key, accuracy):
    return f"{key} {accuracy!r}"


def format_rank_line(key, order):
    """``order`` (a sequence of ints) as a JSON list without spaces."""
    return f"{key} {json.dumps([int(i) for i in order], separators=(',', ':'))}"


def append_lines(path, lines):
    """Append each line to ``path`` with one ``os.write`` in append mode, so lines never interleave.

    The log's folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for line in lines:
            data = (line + "\n").encode("utf-8")
            if os.write(descriptor, data) != len(data):
                raise OSError(f"short write to log file {path}")
    finally:
        os.close(descriptor)


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

    Raises FileNotFoundError when the log is missing and ValueError naming the file and line
    number of the first malformed line, or when the log holds no lines at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log file {path} not found")
    records = []
    with open(path, "rb") as log:
        for line_number, raw in enumerate(log, start=1):
            try:
                text = raw.decode("utf-8")
                if text.strip():
                    records.append(parse_line(text))
            except ValueError as error:  # UnicodeDecodeError is a ValueError too
                raise ValueError(f"{path}, line {line_number}: {error}") from None
    if not records:
        raise ValueError(f"log file {path} is empty: no log lines to analyze")
    return records
