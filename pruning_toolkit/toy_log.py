"""The toy experiment's log: its vocabulary, line format, whole-line appends and parsing.

One line per evaluation, e.g. ``dataset:moon-criterion:lrp-n:20-s:1-scenario:train-stage:pre 99.9``
(``n`` is the total number of reference samples), or, for rank logs, scenario ``rankselection``
with a JSON list of neuron indices as the value. Kept free of torch so the CLI starts fast.

Next to a log ``LOG`` live two small files of its own: ``LOG.noise.json`` (``{"noisytest": SIGMA}``,
the test noise of the results it holds; a log with lines but no such file holds clean results,
sigma 0, as the reference's logs do) and ``LOG.torn`` (bytes of unfinished final lines that were
set aside before appending, so that nothing a killed writer left is lost).
"""
import json
import math
import os
import re
import stat
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: appends in append mode, without a lock
    fcntl = None

from pruning_toolkit.files import write_atomically
from pruning_toolkit.toy_vocabulary import CRITERIA, DATASETS, NUM_CLASSES, RANK_SCENARIO, SCENARIOS, STAGES

_NAME = r"[A-Za-z0-9_.]+"
_KEY = re.compile(rf"(?P<run>dataset:{_NAME}-criterion:{_NAME}-n:\d+-s:\d+)"
                  rf"-scenario:(?P<scenario>{_NAME})-stage:(?P<stage>{_NAME})")
_TAIL_CHUNK = 1 << 16
MAX_LINE_BYTES = 1 << 22  # far above any log line (a rank line of 3000 neurons is about 15 kB)
_LINE = re.compile(
    rf"dataset:(?P<dataset>{_NAME})-criterion:(?P<criterion>{_NAME})-n:(?P<n>\d+)-s:(?P<seed>\d+)"
    rf"-scenario:(?P<scenario>{_NAME})-stage:(?P<stage>{_NAME}) (?P<value>\S+)"
)
_LINE_START = "dataset:"
LINE_FORMAT = "dataset:D-criterion:C-n:N-s:S-scenario:train|test|rankselection-stage:pre|post VALUE"
NOISE_SUFFIX = ".noise.json"
TORN_SUFFIX = ".torn"
NOTE_PREFIX = "main.py: note: "
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


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


# ---------------------------------------------------------------------------------------------
# files next to the log: atomic writes, the noise record, set-aside torn lines
# ---------------------------------------------------------------------------------------------

def noise_path(path):
    """``LOG.noise.json``: the test noise sigma of the results the log ``path`` holds."""
    path = Path(path)
    return path.with_name(path.name + NOISE_SUFFIX)


def torn_path(path):
    """``LOG.torn``: where unfinished final lines of the log ``path`` are set aside."""
    path = Path(path)
    return path.with_name(path.name + TORN_SUFFIX)


def read_noise(path):
    """The test noise sigma of the results in the log ``path``: from ``LOG.noise.json``, 0 without one.

    ValueError when that file is not a noise record ``{"noisytest": SIGMA}``.
    """
    record = noise_path(path)
    try:
        descriptor = _open_regular(record, os.O_RDONLY, "noise record")
    except FileNotFoundError:
        return 0.0
    with os.fdopen(descriptor, "rb") as file:
        data = file.read(1 << 16)
    problem = f"{record} is not a noise record of this toolkit (expected {{\"noisytest\": SIGMA}})"
    try:
        content = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(problem) from None
    sigma = content.get("noisytest") if isinstance(content, dict) else None
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(problem)
    return float(sigma)


def write_noise(path, sigma):
    """Record (atomically) that the log ``path`` holds results with test noise ``sigma``."""
    text = json.dumps({"noisytest": float(sigma)}) + "\n"
    return write_atomically(noise_path(path), lambda temporary: temporary.write_text(text, encoding="utf-8"))


def check_noise(path, sigma):
    """ValueError unless the results in the log ``path`` (which holds lines) have test noise ``sigma``."""
    held = read_noise(path)
    if held != float(sigma):
        record = noise_path(path)
        source = f"recorded in {record.name}" if record.exists() else f"clean: it has no {record.name}"
        raise ValueError(f"{path} holds results with test noise sigma = {held:g} ({source}); results with "
                         f"-nt {float(sigma):g} must not be mixed into it: give another -l")


def _note(message):
    print(NOTE_PREFIX + message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# what a file holds: a log, something else, or a log with an unfinished final line
# ---------------------------------------------------------------------------------------------

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode):
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _open_regular(path, flags, what="log file"):
    """Open ``path`` without blocking (a FIFO would wait for a writer or reader forever) and make sure
    it is a regular file; OSError (IsADirectoryError for a directory) saying what it is otherwise."""
    path = Path(path)
    writing = bool(flags & (os.O_WRONLY | os.O_RDWR))
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise FileNotFoundError(f"{what} {path} not found") from None
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise _not_regular(path, mode, what, writing)
    descriptor = os.open(path, flags | _NONBLOCK, 0o644)
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise _not_regular(path, mode, what, writing)
    return descriptor


def _not_regular(path, mode, what, writing):
    kind = IsADirectoryError if stat.S_ISDIR(mode) else OSError
    return kind(f"cannot {'write' if writing else 'read'} {what} {path}: it is {_kind(mode)}, not a regular file")


def _not_a_log(path, where, reason):
    return ValueError(f"{path} is not a log of this toolkit ({where}: {reason}); give another -l")


def _parse_raw(raw):
    """The record of the bytes of one line (without its newline); ValueError saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    return parse_line(text)


def _looks_like_line_start(raw):
    """Whether ``raw`` could be the start of a log line that a killed writer did not finish."""
    text = raw.decode("utf-8", errors="replace").lstrip()
    return bool(text) and text[:len(_LINE_START)] == _LINE_START[:len(text)]


@dataclass(frozen=True)
class _Inspection:
    """What a log file holds (read under the lock, nothing changed): ``complete`` bytes of whole lines,
    then ``tail`` (bytes after the last newline); ``tail_kind`` is ``""`` (no tail), ``"line"`` (a
    valid log line without its newline), ``"blank"`` or ``"torn"`` (an unfinished line)."""
    size: int
    complete: int
    tail: bytes
    tail_kind: str
    has_lines: bool
    tail_record: object = None


def _inspect(descriptor, path, check_last=True):
    """Look at the first and last lines and the tail of an open log; raise ValueError when the file
    is not a log of this toolkit (its first or, with ``check_last``, last non-blank line is not a log
    line, it is not UTF-8 text, or it is not text at all). Reads the start and end of the file only."""
    size = os.fstat(descriptor).st_size
    complete = _complete_size(descriptor, size, limit=MAX_LINE_BYTES)
    if complete is None:
        raise _not_a_log(path, "its last line", f"no line break in its last {MAX_LINE_BYTES} bytes")
    first = _first_line(descriptor, complete, path)
    if first is not None:
        number, raw = first
        try:
            _parse_raw(raw)
        except ValueError as error:
            raise _not_a_log(path, f"line {number}", error) from None
        start, raw = _last_line(descriptor, complete, path) if check_last else (0, first[1])
        try:
            _parse_raw(raw)
        except ValueError as error:
            number = _count_newlines(descriptor, start) + 1
            raise _not_a_log(path, f"line {number}", error) from None
    tail = _read_at(descriptor, size - complete, complete)
    kind, record = "", None
    if tail.strip():
        try:
            record, kind = _parse_raw(tail), "line"
        except ValueError as error:
            if first is None and not _looks_like_line_start(tail):
                number = _count_newlines(descriptor, complete) + 1
                raise _not_a_log(path, f"line {number}", error) from None
            kind = "torn"
    elif tail:
        kind = "blank"
    return _Inspection(size, complete, tail, kind, first is not None or kind == "line", record)


def _first_line(descriptor, end, path):
    """``(line number, bytes)`` of the first non-blank line among the whole lines in ``[0, end)``."""
    offset, number, buffer = 0, 0, b""
    while offset < end:
        chunk = _read_at(descriptor, min(_TAIL_CHUNK, end - offset), offset)
        if not chunk:
            break
        offset += len(chunk)
        buffer += chunk
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                break
            raw, buffer = buffer[:newline], buffer[newline + 1:]
            number += 1
            if raw.strip():
                return number, raw
        if len(buffer) > MAX_LINE_BYTES:
            raise _not_a_log(path, f"line {number + 1}", f"longer than {MAX_LINE_BYTES} bytes")
    return None


def _last_line(descriptor, end, path):
    """``(offset, bytes)`` of the last non-blank line among the whole lines in ``[0, end)``, which
    holds at least one (``end`` lies right after a newline)."""
    low = end - 1
    buffer = b""  # the bytes [low, end - 1): everything before the final newline not yet looked at
    while True:
        newline = buffer.rfind(b"\n")
        if newline >= 0:
            if buffer[newline + 1:].strip():
                return low + newline + 1, buffer[newline + 1:]
            buffer = buffer[:newline]
            continue
        if low == 0:
            return 0, buffer
        if len(buffer) > MAX_LINE_BYTES:
            raise _not_a_log(path, "its last line", f"longer than {MAX_LINE_BYTES} bytes")
        start = max(0, low - _TAIL_CHUNK)
        buffer = _read_at(descriptor, low - start, start) + buffer
        low = start


def _count_newlines(descriptor, end):
    count, offset = 0, 0
    while offset < end:
        chunk = _read_at(descriptor, min(1 << 20, end - offset), offset)
        if not chunk:
            break
        count += chunk.count(b"\n")
        offset += len(chunk)
    return count


# ---------------------------------------------------------------------------------------------
# appending
# ---------------------------------------------------------------------------------------------

def append_lines(path, lines, noisy_sigma=None):
    """Append ``lines`` to the log at ``path`` as one block of whole lines (see :class:`AppendLog`).

    The log's folder is created when missing.
    """
    with AppendLog(path, noisy_sigma) as log:
        log.append(lines)


def check_log(path, noisy_sigma=None):
    """Before any work: the log at ``path`` (created, with its folder, when missing) is a regular file
    that can be appended to, holds nothing or log lines, and (``noisy_sigma`` not None) holds
    results with that test noise. OSError or ValueError saying what is wrong; nothing is changed."""
    with AppendLog(path, noisy_sigma) as log:
        log.check()


class AppendLog:
    """A log that many processes append to at once, in whole lines.

    Every append takes an exclusive lock on the file (``flock``, where the platform has it) and
    first looks at the file: one that is not a log of this toolkit is refused before anything is
    written (ValueError); a valid final line without its newline gets its newline; an unfinished
    final line (a writer killed mid-write) is copied to ``LOG.torn`` and then cut. The block is
    written with one ``os.write`` in append mode. A line is complete only with its newline.
    :meth:`append_missing` also reads what other writers appended meanwhile and writes only the
    lines the log does not hold yet, so concurrent or resumed grids never duplicate a line.

    ``noisy_sigma`` (not None): the test noise of the lines written; appending to a log that holds
    results of another sigma is refused, and a log getting its first lines records it in
    ``LOG.noise.json``.
    """

    def __init__(self, path, noisy_sigma=None):
        self.path = Path(path)
        self.noisy_sigma = None if noisy_sigma is None else float(noisy_sigma)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._descriptor = _open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
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

    def _inspect(self):
        """Refuse a file that is not a log, or one holding results of another test noise."""
        inspection = _inspect(self._descriptor, self.path)
        if self.noisy_sigma is not None and inspection.has_lines:
            check_noise(self.path, self.noisy_sigma)
        return inspection

    def _repair_tail(self, inspection):
        """Give a valid final line its newline; set an unfinished one aside (``LOG.torn``) and cut it."""
        if inspection.tail_kind in ("line", "blank"):
            self._write_bytes(b"\n")
        elif inspection.tail_kind == "torn":
            side = torn_path(self.path)
            descriptor = _open_regular(side, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "file")
            try:
                _write_all(descriptor, inspection.tail + b"\n")
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.ftruncate(self._descriptor, inspection.complete)
            _note(f"{self.path} ended with an unfinished line ({len(inspection.tail)} bytes, not a log line, "
                  f"left by a writer that was killed); it was moved to {side}")

    def _write_bytes(self, data):
        _write_all(self._descriptor, data)

    def _write(self, lines, inspection):
        if self.noisy_sigma is not None and not inspection.has_lines:
            write_noise(self.path, self.noisy_sigma)
        self._write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))

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

    def check(self):
        """Raise what appending would raise before writing; change nothing."""
        with self._locked():
            self._inspect()

    def append(self, lines):
        """Append ``lines`` as one block, whatever lines the log holds."""
        with self._locked():
            inspection = self._inspect()
            if lines:
                self._repair_tail(inspection)
                self._write(lines, inspection)

    def _known(self, inspection):
        """``{run key: {(scenario, stage)}}`` of the scanned lines and a valid unterminated final line."""
        entries = {run: set(found) for run, found in self._entries.items()}
        if inspection.tail_kind == "line":
            record = inspection.tail_record
            run = run_key(record.dataset, record.criterion, record.total_samples, record.seed)
            entries.setdefault(run, set()).add((record.scenario, record.stage))
        return entries

    def entries(self):
        """``{run key: {(scenario, stage), ...}}`` of every line in the log; changes nothing."""
        with self._locked():
            inspection = self._inspect()
            self._scan()
            return {run: frozenset(found) for run, found in self._known(inspection).items()}

    def append_missing(self, lines):
        """Append, as one block, those of ``lines`` whose key the log does not hold yet; return them."""
        with self._locked():
            inspection = self._inspect()
            self._scan()  # a malformed line is refused before anything is written
            known = self._known(inspection)
            missing, seen = [], set()
            for line in lines:
                run, scenario, stage = split_key(line.split(" ", 1)[0])
                if (scenario, stage) not in known.get(run, ()) and (run, scenario, stage) not in seen:
                    missing.append(line)
                    seen.add((run, scenario, stage))
            if missing:
                self._repair_tail(inspection)
                self._write(missing, inspection)
        return missing


def _write_all(descriptor, data):
    while data:
        written = os.write(descriptor, data)
        data = data[written:]


def check_writable(path):
    """Create the log's folder and make sure the log is a regular file that can be appended to;
    raise OSError otherwise (IsADirectoryError for a directory)."""
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    os.close(_open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT))


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

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
        return self.total_samples // NUM_CLASSES[self.dataset]

    @property
    def key(self):
        return format_key(self.dataset, self.criterion, self.total_samples, self.seed, self.scenario, self.stage)


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
    classes = NUM_CLASSES[fields["dataset"]]
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
    """All records of the log at ``path``, blank lines skipped; the file is only read.

    A final line without its newline is kept when it is a valid log line; an unfinished one (a torn
    write, or one still being written: see :func:`torn_tail`) is left out. Raises
    FileNotFoundError when the log is missing, OSError when it is not a regular file, and
    ValueError when the file is not a log of this toolkit, naming the file and line number of the
    first malformed line, or when the log holds no lines at all.
    """
    path = Path(path)
    descriptor = _open_regular(path, os.O_RDONLY)
    records = []
    with os.fdopen(descriptor, "rb") as log:
        inspection = _inspect(descriptor, path, check_last=False)  # every line is parsed below
        os.lseek(descriptor, 0, os.SEEK_SET)
        offset, line_number = 0, 0
        for raw in log:
            offset += len(raw)
            line_number += 1
            if offset > inspection.complete:
                break
            try:
                if raw.strip():
                    records.append(_parse_raw(raw.rstrip(b"\n")))
            except ValueError as error:
                if not records:  # the first non-blank line: this is not a log at all
                    raise _not_a_log(path, f"line {line_number}", error) from None
                raise ValueError(f"{path}, line {line_number}: {error}") from None
    if inspection.tail_kind == "line":
        records.append(inspection.tail_record)
    if not records:
        raise ValueError(f"log file {path} is empty: no log lines to analyze")
    return records


def unique_records(records):
    """``(records, duplicates)``: the first record of every key in ``records``, in order, and the
    number of later records with a key already seen (repeated identical runs append again)."""
    first = {}
    for record in records:
        first.setdefault(record.key, record)
    return list(first.values()), len(records) - len(first)


def torn_tail(path):
    """The unfinished final line of the log at ``path`` (bytes after the last newline that are not a
    valid log line), or ``b""``."""
    descriptor = _open_regular(path, os.O_RDONLY)
    try:
        size = os.fstat(descriptor).st_size
        complete = _complete_size(descriptor, size)
        tail = _read_at(descriptor, size - complete, complete)
    finally:
        os.close(descriptor)
    if not tail.strip():
        return b""
    try:
        _parse_raw(tail)
        return b""
    except ValueError:
        return tail


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


def _complete_size(descriptor, size, limit=None):
    """The length of the first ``size`` bytes of the file up to and including their last newline;
    None when ``limit`` is given and the last ``limit`` bytes (of a longer file) hold no newline."""
    end = size
    while end > 0:
        if limit is not None and size - end >= limit:
            return None
        start = max(0, end - _TAIL_CHUNK)
        newline = _read_at(descriptor, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
