"""Grid runs: the list syntax of the run flags, runs equal to single runs, resume after kills and torn
lines, whole-line appends with concurrent writers."""
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import toy_datasets
from pruning_toolkit import runtime
from pruning_toolkit import toy_grid
from pruning_toolkit import toy_log
from pruning_toolkit import toy_model
import toy_pruning

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 40


# ---------------------------------------------------------------------------------------------
# list syntax
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("5", (5,)), ("1,2,5", (1, 2, 5)), ("0-4", (0, 1, 2, 3, 4)), ("0-2,7,5-6", (0, 1, 2, 7, 5, 6)),
    ("3,1,3,2-3", (3, 1, 2)), (" 4 , 6 ", (4, 6)), ("all", (1, 2, 5, 10, 20, 50, 100, 200)),
])
def test_integer_lists_and_ranges(text, expected):
    assert toy_grid.parse_integers(text, "-n", 0, 1000, (1, 2, 5, 10, 20, 50, 100, 200)) == expected


@pytest.mark.parametrize("text, problem", [
    ("5-2", "runs backwards"), ("1,,2", "empty item"), ("two", "'two' is not a whole number"),
    ("-3", "'-3' is not"), ("0", "at least 1"), ("1-1000", "below 1000"), ("1.5", "not a whole number"),
])
def test_bad_integer_lists_name_the_flag_and_the_problem(text, problem):
    with pytest.raises(ValueError, match=problem) as error:
        toy_grid.parse_integers(text, "--numsamples", 1, 1000, ())
    assert str(error.value).startswith("--numsamples")


def test_name_lists():
    assert toy_grid.parse_names("all", toy_log.CRITERIA, "-c") == toy_log.CRITERIA
    assert toy_grid.parse_names("weight,lrp,weight", toy_log.CRITERIA, "-c") == ("weight", "lrp")
    with pytest.raises(ValueError, match="unknown value 'spiral'"):
        toy_grid.parse_names("moon,spiral", toy_datasets.DATASETS, "--dataset")


@pytest.mark.parametrize("text, is_grid", [("moon", False), ("5", False), ("all", True), ("moon,mult", True),
                                           ("0-49", True), ("7,", True)])
def test_grid_mode_is_asked_for_by_list_syntax(text, is_grid):
    assert toy_grid.is_grid_value(text) == is_grid


def test_the_paper_grid_has_4800_runs_in_script_order():
    runs = toy_grid.parse_grid("all", "all", "all", "0-49")
    assert len(runs) == len(set(runs)) == 4800
    assert runs[:2] == [toy_grid.GridRun("moon", "lrp", 1, 0), toy_grid.GridRun("moon", "lrp", 1, 1)]
    assert runs[-1] == toy_grid.GridRun("mult", "weight", 200, 49)
    assert toy_grid.GridRun("mult", "grad", 5, 3).key == "dataset:mult-criterion:grad-n:20-s:3"


# ---------------------------------------------------------------------------------------------
# running grids with small models
# ---------------------------------------------------------------------------------------------

def tiny_prepared():
    """40-wide untrained models on 200 training points per dataset: fast runs, real code paths."""
    prepared = {}
    for index, dataset in enumerate(toy_datasets.DATASETS):
        torch.manual_seed(index)
        model = toy_model.build_model(toy_datasets.NUM_CLASSES[dataset], hidden_width=WIDTH)
        prepared[dataset] = toy_pruning.prepare(dataset, "cpu", model=model,
                                                training_set=toy_datasets.generate(dataset, 200, 0))
    return prepared


@pytest.fixture(scope="module")
def prepared():
    return tiny_prepared()


def expected_lines(prepared, runs, **options):
    """What single runs log for ``runs``, one after the other (40 of the 120 neurons pruned)."""
    with runtime.one_cpu_thread(torch.device("cpu")):  # small ops on many threads are slow
        return [line for run in runs for line in toy_pruning.run(
            prepared[run.dataset], run.criterion, run.samples_per_class, run.seed, count=WIDTH, **options).lines]


def read_lines(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("jobs", [1, 2])
def test_grid_writes_the_single_runs_lines_in_order(tmp_path, prepared, jobs):
    runs = toy_grid.parse_grid("moon,mult", "lrp,weight", "1,3", "0-1")
    log = tmp_path / "log.txt"
    summary = toy_grid.run_grid(runs, log, jobs=jobs, prepared=prepared, count=WIDTH)
    assert (summary.requested, summary.skipped, summary.done) == (16, 0, 16)
    assert read_lines(log) == expected_lines(prepared, runs)


@pytest.mark.parametrize("options", [{"rank_log": True}, {"noisy_sigma": 0.1}])
def test_rank_and_noisy_grids(tmp_path, prepared, options):
    runs = toy_grid.parse_grid("circle", "taylor,grad", "2", "0-2")
    log = tmp_path / "log.txt"
    toy_grid.run_grid(runs, log, jobs=2, prepared=prepared, count=WIDTH, **options)
    assert read_lines(log) == expected_lines(prepared, runs, **options)
    assert toy_grid.run_grid(runs, log, jobs=2, prepared=prepared, count=WIDTH, **options).done == 0


def test_resume_skips_complete_runs_cuts_a_torn_line_and_completes_partial_runs(tmp_path, prepared):
    runs = toy_grid.parse_grid("moon", "lrp,grad", "1,2", "0-2")
    lines = expected_lines(prepared, runs)
    log = tmp_path / "log.txt"
    # five complete runs, then two lines of the sixth, then a writer killed inside the next line
    log.write_bytes(("\n".join(lines[:22]) + "\n" + lines[22][:17]).encode("utf-8"))
    summary = toy_grid.run_grid(runs, log, jobs=1, prepared=prepared, count=WIDTH)
    assert (summary.skipped, summary.done) == (5, 7)
    written = read_lines(log)
    assert len(written) == len(set(written)) == len(lines)
    assert written[:22] == lines[:22] and sorted(written) == sorted(lines)
    assert log.read_bytes().endswith(b"\n")


def test_partial_runs_get_only_their_missing_lines(tmp_path, prepared):
    runs = toy_grid.parse_grid("mult", "weight", "1", "4")
    lines = expected_lines(prepared, runs)
    log = tmp_path / "log.txt"
    toy_log.append_lines(log, [lines[2], lines[0]])
    toy_grid.run_grid(runs, log, prepared=prepared, count=WIDTH)
    assert read_lines(log) == [lines[2], lines[0], lines[1], lines[3]]


KILLED_GRID = ("moon", "all", "1,2", "0-14")
GRID_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    import test_toy_grid
    from pruning_toolkit import toy_grid, toy_run
    run = toy_run.run

    def slow_run(*args, **kwargs):  # at least 20 ms a run, so that the grid is still running when killed
        time.sleep(0.02)
        return run(*args, **kwargs)

    toy_run.run = slow_run
    runs = toy_grid.parse_grid(*test_toy_grid.KILLED_GRID)
    toy_grid.run_grid(runs, sys.argv[1], jobs=2, prepared=test_toy_grid.tiny_prepared(), count=test_toy_grid.WIDTH)
""")


def test_grid_killed_with_sigkill_continues_without_duplicates(tmp_path, prepared):
    log = tmp_path / "log.txt"
    script = tmp_path / "grid.py"
    script.write_text(GRID_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests")), encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(script), str(log)], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 2000):
            time.sleep(0.01)
        assert process.poll() is None, "the grid ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)  # the parent and its workers, mid-grid
    finally:
        process.wait()
    before = read_lines(log)
    runs = toy_grid.parse_grid(*KILLED_GRID)
    summary = toy_grid.run_grid(runs, log, jobs=2, prepared=prepared, count=WIDTH)
    assert 0 < summary.skipped < len(runs) and summary.skipped + summary.done == len(runs)
    after = read_lines(log)
    assert after[:len(before)] == before
    assert len(after) == len(set(after)) == 4 * len(runs)
    assert after == expected_lines(prepared, runs)  # the grid writes in run order, also when resumed


# ---------------------------------------------------------------------------------------------
# the log under concurrent writers
# ---------------------------------------------------------------------------------------------

def block_of(writer, run):
    """Four lines of one run, the rank-log-sized value (a valid accuracy) making each line span several pages."""
    key = toy_log.run_key("moon", "lrp", 2, run)
    value = f"{90 + writer}." + "0" * 5000 + f"{writer + 1}"
    return [f"{key}-scenario:{scenario}-stage:{stage} {value}" for stage in toy_log.STAGES
            for scenario in toy_log.SCENARIOS]


def _write_blocks(path, writer, runs, only_missing):
    with toy_log.AppendLog(path) as log:
        for run in runs:
            if only_missing:
                log.append_missing(block_of(writer, run))
            else:
                log.append(block_of(writer, run))


def run_writers(path, only_missing, runs_of):
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_blocks, args=(path, w, runs_of(w), only_missing)) for w in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_blocks_stay_whole_and_contiguous(tmp_path):
    log = tmp_path / "log.txt"
    run_writers(log, False, lambda writer: range(writer * 100, writer * 100 + 25))
    lines = read_lines(log)
    assert len(lines) == 4 * 4 * 25
    blocks = [lines[i:i + 4] for i in range(0, len(lines), 4)]
    assert sorted(map(tuple, blocks)) == sorted(tuple(block_of(w, r)) for w in range(4)
                                                 for r in range(w * 100, w * 100 + 25))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_writers_of_the_same_runs_write_each_line_once(tmp_path):
    log = tmp_path / "log.txt"
    run_writers(log, True, lambda writer: range(30))
    lines = read_lines(log)
    keys = [line.split(" ")[0] for line in lines]
    assert len(keys) == len(set(keys)) == 4 * 30
    blocks = [lines[i:i + 4] for i in range(0, len(lines), 4)]
    assert all(any(block == block_of(w, r) for w in range(4)) for r, block in zip(range(30), sorted(
        blocks, key=lambda block: int(block[0].split("-s:")[1].split("-")[0]))))


def test_append_cuts_a_torn_final_line_and_read_log_leaves_it_out(tmp_path):
    log = tmp_path / "log.txt"
    good = "dataset:moon-criterion:lrp-n:2-s:0-scenario:train-stage:pre 99.5"
    log.write_text(good + "\n" + good[:30], encoding="utf-8")
    assert toy_log.torn_tail(log) == good[:30].encode()
    assert len(toy_log.read_log(log)) == 1
    toy_log.append_lines(log, [good.replace("s:0", "s:1")])
    assert read_lines(log) == [good, good.replace("s:0", "s:1")]
    assert toy_log.torn_tail(log) == b""
    log.write_text(good[:10], encoding="utf-8")  # a log holding nothing but a torn line
    toy_log.append_lines(log, [good])
    assert read_lines(log) == [good]


def test_append_missing_rejects_a_malformed_line_with_its_number(tmp_path):
    log = tmp_path / "log.txt"
    good = "dataset:moon-criterion:lrp-n:2-s:0-scenario:train-stage:pre 99.5"
    log.write_text(f"{good}\n\nnot a log line\n", encoding="utf-8")
    with toy_log.AppendLog(log) as appender, pytest.raises(ValueError, match=r"log\.txt.*line 3: malformed"):
        appender.append_missing([good])
    log.write_text(f"{good}\nnot a log line\n{good}\n", encoding="utf-8")  # a bad line inside a log
    with toy_log.AppendLog(log) as appender, pytest.raises(ValueError, match=r"log\.txt, line 2: malformed"):
        appender.append_missing([good.replace("s:0", "s:1")])
    assert log.read_text(encoding="utf-8") == f"{good}\nnot a log line\n{good}\n"


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, MPLBACKEND="Agg"))


@pytest.mark.parametrize("args, fragments", [
    (["-d", "moon,spiral"], ["--dataset", "spiral"]),
    (["-c", "lrp,random"], ["--criterion", "random"]),
    (["-s", "9-3"], ["--seed", "backwards"]),
    (["-n", "1,x"], ["--numsamples", "'x'"]),
    (["-s", "0-3", "-r", "svg"], ["--rendermode", "single runs"]),
    (["-s", "0-3", "-j", "0"], ["--jobs", "at least 1"]),
    (["-f", "-n", "1,5"], ["--figure", "-n"]),
])
def test_bad_grid_arguments_give_one_line(args, fragments):
    result = run_cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("main.py: error: ") and all(f in line for f in fragments), line


@pytest.mark.skipif(not all(toy_model.model_path(d).is_file() and toy_datasets.training_set_path(d).is_file()
                            for d in ("moon", "mult")), reason="shipped models or training sets not present")
def test_grid_lines_equal_the_single_run_cli_lines(tmp_path):
    single = run_cli("-d", "mult", "-c", "taylor", "-n", "2", "-s", "3", "-l", tmp_path / "single.txt")
    assert single.returncode == 0, single.stderr
    grid = run_cli("-d", "moon,mult", "-c", "taylor", "-n", "2", "-s", "3-4", "-j", "2", "-l", tmp_path / "grid.txt")
    assert grid.returncode == 0, grid.stderr
    assert "4 runs: 0 already in" in grid.stdout
    grid_lines = read_lines(tmp_path / "grid.txt")
    assert len(grid_lines) == 16 and grid_lines[8:12] == read_lines(tmp_path / "single.txt")
