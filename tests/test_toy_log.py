"""The log line format: exact text, parse round trip, malformed input, whole-line appends."""
import json
import multiprocessing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pruning_toolkit import toy_log


def test_key_and_line_have_the_spec_format():
    key = toy_log.format_key("moon", "lrp", 20, 1, "train", "pre")
    assert toy_log.format_accuracy_line(key, 99.9) == \
        "dataset:moon-criterion:lrp-n:20-s:1-scenario:train-stage:pre 99.9"
    rank_key = toy_log.format_key("mult", "grad", 8, 0, "rankselection", "pre")
    assert toy_log.format_rank_line(rank_key, [2, 0, 1]) == \
        "dataset:mult-criterion:grad-n:8-s:0-scenario:rankselection-stage:pre [2,0,1]"


@given(dataset=st.sampled_from(toy_log.DATASETS), criterion=st.sampled_from(toy_log.CRITERIA),
       per_class=st.integers(1, 500), seed=st.integers(0, 2 ** 32 - 1),
       scenario=st.sampled_from(toy_log.SCENARIOS), stage=st.sampled_from(toy_log.STAGES),
       correct=st.integers(0, 4000), total=st.integers(1, 4000))
def test_accuracy_line_round_trip(dataset, criterion, per_class, seed, scenario, stage, correct, total):
    accuracy = 100.0 * min(correct, total) / total
    classes = 4 if dataset == "mult" else 2
    line = toy_log.format_accuracy_line(
        toy_log.format_key(dataset, criterion, per_class * classes, seed, scenario, stage), accuracy)
    record = toy_log.parse_line(line)
    assert record == toy_log.LogRecord(dataset, criterion, per_class * classes, seed, scenario, stage, accuracy)
    assert record.samples_per_class == per_class


@given(st.permutations(list(range(30))))
def test_rank_line_round_trip(order):
    line = toy_log.format_rank_line(toy_log.format_key("circle", "taylor", 10, 3, "rankselection", "pre"), order)
    assert toy_log.parse_line(line).value == list(order)


@pytest.mark.parametrize("line, problem", [
    ("dataset:moon-criterion:lrp-n:20-s:1-scenario:train-stage:pre", "malformed"),
    ("dataset:moon-criterion:lrp-n:20-s:1-scenario:train-stage:pre abc", "not a number"),
    ("dataset:moon-criterion:lrp-n:20-s:1-scenario:train-stage:pre 101.0", "percentage"),
    ("dataset:moon-criterion:lrp-n:20-s:1-scenario:valid-stage:pre 99.0", "unknown scenario"),
    ("dataset:moon-criterion:lrp-n:20-s:1-scenario:train-stage:mid 99.0", "unknown stage"),
    ("dataset:spiral-criterion:lrp-n:20-s:1-scenario:train-stage:pre 99.0", "unknown dataset"),
    ("dataset:moon-criterion:random-n:20-s:1-scenario:train-stage:pre 99.0", "unknown criterion"),
    ("dataset:mult-criterion:lrp-n:6-s:1-scenario:train-stage:pre 99.0", "multiple"),
    ("dataset:moon-criterion:lrp-n:4-s:1-scenario:rankselection-stage:pre [0,0,1]", "permutation"),
    ("dataset:moon-criterion:lrp-n:4-s:1-scenario:rankselection-stage:pre [0,1", "JSON"),
])
def test_malformed_lines_are_rejected_with_the_reason(line, problem):
    with pytest.raises(ValueError, match=problem):
        toy_log.parse_line(line)


def test_read_log_names_the_malformed_line_number(tmp_path):
    log = tmp_path / "log.txt"
    good = "dataset:moon-criterion:lrp-n:20-s:1-scenario:train-stage:pre 99.9\n"
    log.write_text(good + "\n" + good + "dataset:moon-criterion:lrp-n:20 oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"log\.txt, line 4: malformed log line"):
        toy_log.read_log(log)
    log.write_text(good + "\n" + good, encoding="utf-8")
    assert len(toy_log.read_log(log)) == 2


def test_read_log_rejects_missing_empty_and_binary_logs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        toy_log.read_log(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        toy_log.read_log(tmp_path / "empty.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match="line 1"):
        toy_log.read_log(tmp_path / "binary.txt")


def test_append_creates_missing_folders_and_appends(tmp_path):
    log = tmp_path / "a" / "b" / "log.txt"
    one, two, three = (toy_log.format_accuracy_line(toy_log.format_key("moon", "lrp", 2, seed, "train", "pre"), 99.0)
                       for seed in range(3))
    toy_log.append_lines(log, [one, two])
    toy_log.append_lines(log, [three])
    assert log.read_text(encoding="utf-8") == f"{one}\n{two}\n{three}\n"


def test_check_writable_rejects_directories_and_paths_below_files(tmp_path):
    with pytest.raises(IsADirectoryError):
        toy_log.check_writable(tmp_path)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(OSError):
        toy_log.check_writable(tmp_path / "file" / "log.txt")
    toy_log.check_writable(tmp_path / "new" / "log.txt")
    assert (tmp_path / "new" / "log.txt").is_file()


def _append_many(path, writer):
    order = list(range(3000))
    key = toy_log.format_key("moon", "lrp", 2, writer, "rankselection", "pre")
    for _ in range(20):
        toy_log.append_lines(path, [toy_log.format_rank_line(key, order)])


def test_concurrent_appends_keep_lines_whole(tmp_path):
    log = tmp_path / "log.txt"
    processes = [multiprocessing.get_context("fork").Process(target=_append_many, args=(log, w)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    records = toy_log.read_log(log)
    assert sorted(r.seed for r in records) == sorted(list(range(4)) * 20)
    assert all(r.value == list(range(3000)) for r in records)
    assert json.loads(log.read_text(encoding="utf-8").splitlines()[0].split(" ")[1])[:3] == [0, 1, 2]
