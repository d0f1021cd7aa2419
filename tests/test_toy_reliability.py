"""What the toy CLI must never do: lose or alter what a file held, mix noisy and clean results, take
unbounded input, leave half-written figures or scripts, die noisily on SIGTERM, count a run twice,
or hang on a file that is not a regular file."""
import json
import multiprocessing
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import main
import toy_analysis
from pruning_toolkit import toy_grid
from pruning_toolkit import toy_log
from pruning_toolkit import toy_run
from pruning_toolkit import toy_sweep
from test_toy_analysis import synthetic_accuracy_lines
from test_toy_grid import WIDTH, expected_lines, read_lines, tiny_prepared

ROOT = Path(__file__).resolve().parents[1]
LINE = "dataset:moon-criterion:lrp-n:2-s:0-scenario:train-stage:pre 99.5"
needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


@pytest.fixture(scope="module")
def prepared():
    return tiny_prepared()


@pytest.fixture
def fast_runs(monkeypatch, prepared):
    """main.py's runs on the small untrained models of test_toy_grid (40 of 120 neurons pruned)."""
    run = toy_run.run
    monkeypatch.setattr(toy_run, "prepare", lambda dataset, device="cpu", **kwargs: prepared[dataset])
    monkeypatch.setattr(toy_run, "run", lambda *args, **kwargs: run(*args, **{**kwargs, "count": WIDTH}))
    monkeypatch.setattr(toy_grid, "PRUNED_NEURONS", WIDTH)


def cli(capsys, *args):
    """``main.main(args)`` in this process: ``(exit status, stdout, stderr)``."""
    status = main.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(err, *fragments):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("main.py: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


SINGLE = ("-d", "circle", "-c", "grad", "-n", "1", "-s", "2", "--device", "cpu", "-q")


# ---------------------------------------------------------------------------------------------
# 1. the log writer keeps what the file held
# ---------------------------------------------------------------------------------------------

def test_a_complete_last_line_without_its_newline_is_kept(tmp_path, capsys, fast_runs):
    lines = synthetic_accuracy_lines()[:8]
    log = tmp_path / "log.txt"
    log.write_text("\n".join(lines), encoding="utf-8")  # printf '%s' "$(cat log.txt)" > log.txt
    status, out, err = cli(capsys, *SINGLE, "-l", log)
    assert status == 0, err
    written = read_lines(log)
    assert written[:8] == lines and len(written) == 12
    assert written[8:] == out.splitlines()[:4]   # the fifth printed line counts the pruned neurons
    assert not toy_log.torn_path(log).exists()


def test_a_grid_counts_a_run_whose_last_line_lacks_its_newline(tmp_path, prepared):
    runs = toy_grid.parse_grid("moon", "lrp", "1", "0-1")
    lines = expected_lines(prepared, runs)
    log = tmp_path / "log.txt"
    log.write_text("\n".join(lines[:4]), encoding="utf-8")
    summary = toy_grid.run_grid(runs, log, prepared=prepared, count=WIDTH)
    assert (summary.skipped, summary.done) == (1, 1)
    assert read_lines(log) == lines


def test_a_torn_tail_is_set_aside_with_a_note_not_lost(tmp_path, capsys):
    log = tmp_path / "log.txt"
    log.write_bytes((LINE + "\n" + LINE[:25]).encode())
    toy_log.append_lines(log, [LINE.replace("s:0", "s:1")])
    assert read_lines(log) == [LINE, LINE.replace("s:0", "s:1")]
    assert toy_log.torn_path(log).read_bytes() == LINE[:25].encode() + b"\n"
    err = capsys.readouterr().err
    assert "note:" in err and str(toy_log.torn_path(log)) in err


def notes_file(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\nsome text\nthe last line, without a newline", encoding="utf-8")
    return path


def binary_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 20)  # holds newlines, but is no UTF-8 text
    return path


def readme_copy(tmp_path):
    path = tmp_path / "README.md"
    path.write_bytes((ROOT / "README.md").read_bytes())
    return path


def log_with_foreign_last_line(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text(LINE + "\nsomething else\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("make", [notes_file, binary_file, readme_copy, log_with_foreign_last_line])
@pytest.mark.parametrize("mode", [[], ["-s", "0-1"], ["-f", "-c", "grad,lrp"]], ids=["single", "grid", "figure"])
def test_a_file_that_is_not_a_log_is_refused_before_anything_is_written(tmp_path, capsys, fast_runs, make, mode):
    path = make(tmp_path)
    before = path.read_bytes()
    status, out, err = cli(capsys, *SINGLE, *mode, "-l", path)
    assert status == 1
    one_error_line(err, str(path), "is not a log of this toolkit", "give another -l")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("make", [notes_file, binary_file, readme_copy])
def test_read_log_and_analysis_refuse_a_file_that_is_not_a_log_and_change_nothing(tmp_path, capsys, make):
    path = make(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="is not a log of this toolkit"):
        toy_log.read_log(path)
    status, _, err = cli(capsys, "-a", "-l", path)
    assert status == 1
    one_error_line(err, str(path), "is not a log of this toolkit")
    assert path.read_bytes() == before


def test_analysis_counts_a_valid_unterminated_last_line_and_changes_nothing(tmp_path, capsys):
    lines = synthetic_accuracy_lines()
    log = tmp_path / "log.txt"
    log.write_text("\n".join(lines), encoding="utf-8")
    before = log.read_bytes()
    assert len(toy_log.read_log(log)) == len(lines)
    torn = tmp_path / "torn" / "log.txt"
    torn.parent.mkdir()
    torn.write_text("\n".join(lines) + "\n" + lines[0][:20], encoding="utf-8")
    torn_before = torn.read_bytes()
    status, _, err = cli(capsys, "-a", "-l", torn)
    assert status == 0, err
    assert "unfinished line" in err
    assert log.read_bytes() == before and torn.read_bytes() == torn_before
    assert not toy_log.torn_path(torn).exists()


# ---------------------------------------------------------------------------------------------
# 2. noisy and clean results never mix
# ---------------------------------------------------------------------------------------------

def test_a_noisy_grid_on_a_clean_log_is_refused(tmp_path, capsys, fast_runs, prepared):
    runs = toy_grid.parse_grid("moon", "lrp", "1", "0-1")
    log = tmp_path / "log.txt"
    toy_grid.run_grid(runs, log, prepared=prepared, count=WIDTH)  # clean results
    before = log.read_bytes()
    status, out, err = cli(capsys, "-d", "moon", "-c", "lrp", "-n", "1", "-s", "0-1", "-nt", "0.3", "-q",
                           "--device", "cpu", "-l", log)
    assert status == 1
    one_error_line(err, str(log), "sigma = 0 ", "-nt 0.3", "give another -l")
    assert log.read_bytes() == before


def test_a_log_records_its_noise_and_refuses_another(tmp_path, capsys, fast_runs):
    log = tmp_path / "log.txt"
    status, _, err = cli(capsys, *SINGLE, "-nt", "0.3", "-l", log)
    assert status == 0, err
    assert json.loads(toy_log.noise_path(log).read_text(encoding="utf-8")) == {"noisytest": 0.3}
    before = log.read_bytes()
    for other in ([], ["-nt", "0.1"], ["-s", "3-4"], ["-s", "3-4", "-nt", "0.01"]):
        status, _, err = cli(capsys, *SINGLE, *other, "-l", log)
        assert status == 1
        one_error_line(err, "sigma = 0.3", "give another -l")
    assert log.read_bytes() == before
    status, _, err = cli(capsys, *SINGLE, "-s", "3-4", "-nt", "0.3", "-l", log)
    assert status == 0, err
    assert len(read_lines(log)) == 12
    with pytest.raises(ValueError, match="sigma = 0.3"):
        toy_log.append_lines(log, [LINE], noisy_sigma=0.0)


def test_a_noisy_grid_records_its_noise_in_a_new_log(tmp_path, prepared):
    runs = toy_grid.parse_grid("circle", "grad", "1", "0")
    log = tmp_path / "log.txt"
    toy_grid.run_grid(runs, log, prepared=prepared, count=WIDTH, noisy_sigma=0.1)
    assert toy_log.read_noise(log) == 0.1
    with pytest.raises(ValueError, match="sigma = 0.1"):
        toy_grid.run_grid(runs, log, prepared=prepared, count=WIDTH)


def test_analysis_names_the_logs_noise_in_the_figure_titles(tmp_path, capsys):
    log = tmp_path / "log.txt"
    toy_log.append_lines(log, synthetic_accuracy_lines(), noisy_sigma=0.3)
    status, out, err = cli(capsys, "-a", "-l", log)
    assert status == 0, err
    for name in ("moon-test.svg", "mult-train.svg", "combined.svg"):
        assert "test noise sigma = 0.3" in (tmp_path / name).read_text(encoding="utf-8")
    assert "test noise sigma = 0.3" in out
    clean = tmp_path / "clean" / "log.txt"
    toy_log.append_lines(clean, synthetic_accuracy_lines())
    assert cli(capsys, "-a", "-l", clean)[0] == 0
    assert "test noise" not in (clean.parent / "combined.svg").read_text(encoding="utf-8")


@pytest.mark.parametrize("sigma", ["0.01", "0.1", "0.3"])
def test_the_committed_noisy_logs_record_their_noise(sigma):
    log = ROOT / f"output-noisytest-{sigma}" / "log.txt"
    assert toy_log.read_noise(log) == float(sigma)
    toy_log.check_log(log, float(sigma))  # a -nt SIGMA grid may continue them
    with pytest.raises(ValueError, match=f"sigma = {sigma}"):
        toy_log.check_log(log, 0.0)


def test_a_broken_noise_record_is_one_clear_error(tmp_path, capsys):
    log = tmp_path / "log.txt"
    toy_log.append_lines(log, synthetic_accuracy_lines())
    toy_log.noise_path(log).write_text("[0.3]", encoding="utf-8")
    status, _, err = cli(capsys, "-a", "-l", log)
    assert status == 1
    one_error_line(err, str(toy_log.noise_path(log)), "is not a noise record")


# ---------------------------------------------------------------------------------------------
# 3. bounds, checked before anything is expanded
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["-n", "1000000"], ["--numsamples", "1000 samples per class"]),
    (["-n", "4294967295"], ["--numsamples", "at most 1000"]),
    (["-n", "1001"], ["--numsamples", "at most 1000"]),
    (["-s", "4294967296"], ["--seed", "4294967295"]),
    (["-s", "0-4294967295"], ["--seed", "more than 1000000"]),
    (["-s", "0-999999,1000000"], ["--seed", "more than 1000000"]),
    (["-d", "all", "-c", "all", "-n", "1-1000", "-s", "0-999"], ["12000000 runs", "at most 1000000"]),
])
def test_huge_numbers_are_refused_before_any_work(tmp_path, capsys, args, fragments):
    log = tmp_path / "new" / "log.txt"
    start = time.perf_counter()
    status, _, err = cli(capsys, *args, "-l", log)
    assert status == 2
    one_error_line(err, *fragments)
    assert time.perf_counter() - start < 5
    assert not log.parent.exists()


def test_the_largest_allowed_values_still_parse():
    assert toy_grid.parse_grid("moon", "lrp", "1000", "4294967295")[0].seed == 2 ** 32 - 1
    assert len(toy_grid.parse_integers("0-999999", "--seed", 0, toy_grid.SEED_LIMIT, ())) == 10 ** 6


# ---------------------------------------------------------------------------------------------
# 4. figures and scripts are replaced whole; SVGs are reproducible
# ---------------------------------------------------------------------------------------------

def test_a_failed_figure_save_keeps_the_previous_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    records = [toy_log.parse_line(line) for line in synthetic_accuracy_lines()]
    toy_analysis.write_accuracy_plots(records, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(self, path, **kwargs):
        Path(path).write_bytes(b"<?xml version='1.0'")  # what a full disk leaves: a start
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space"):
        toy_analysis.write_accuracy_plots(records, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_failed_script_write_keeps_the_previous_script(tmp_path, monkeypatch):
    toy_sweep.write_scripts(tmp_path)
    folder = tmp_path / "scripts"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    write_text = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        write_text(self, text[:100], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space"):
        toy_sweep.write_scripts(tmp_path)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert all(os.stat(folder / name).st_mode & stat.S_IXUSR for name in before)


def test_reanalysing_an_unchanged_log_writes_identical_svgs(tmp_path, capsys):
    log = tmp_path / "log.txt"
    toy_log.append_lines(log, synthetic_accuracy_lines())
    assert cli(capsys, "-a", "-l", log)[0] == 0
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.svg")}
    assert len(first) == 5
    assert cli(capsys, "-a", "-l", log)[0] == 0
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.svg")} == first
    assert not re.search(rb"<dc:date>", first["combined.svg"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------------------------------------
# 5. SIGTERM stops a grid as Ctrl-C does
# ---------------------------------------------------------------------------------------------

TERM_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    import test_toy_grid
    from pruning_toolkit import toy_run
    import main
    run, prepared = toy_run.run, test_toy_grid.tiny_prepared()

    def slow_run(*args, **kwargs):  # at least 50 ms a run: the grid is still running when it is stopped
        time.sleep(0.05)
        return run(*args, **{{**kwargs, "count": test_toy_grid.WIDTH}})

    toy_run.run = slow_run
    toy_run.prepare = lambda dataset, device="cpu", **kwargs: prepared[dataset]
    sys.exit(main.main(["-d", "moon", "-c", "all", "-n", "1,2", "-s", "0-49", "-j", "2", "-q", "--device", "cpu",
                        "-l", sys.argv[1]]))
""")


@needs_fork
@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="needs SIGTERM")
def test_sigterm_stops_a_grid_with_one_line_and_a_whole_log(tmp_path):
    log = tmp_path / "log.txt"
    script = tmp_path / "grid.py"
    script.write_text(TERM_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests")), encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(script), str(log)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not log.exists() or len(read_lines(log)) < 8):
            time.sleep(0.01)
        assert process.poll() is None, "the grid ended before it could be stopped"
        process.send_signal(signal.SIGTERM)  # the parent only, as `kill PID` does
        _, err = process.communicate(timeout=60)  # also waits for the workers' end of stderr
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith("main.py: terminated by SIGTERM")
    deadline = time.monotonic() + 10  # no worker outlives the parent
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a worker still runs"
        time.sleep(0.05)
    data = log.read_bytes()
    assert data.endswith(b"\n")
    records = toy_log.read_log(log)
    assert len(records) % 4 == 0 and 8 <= len(records) < 4 * 400


# ---------------------------------------------------------------------------------------------
# 6. a run logged twice counts once
# ---------------------------------------------------------------------------------------------

def test_analysis_counts_each_run_once_and_says_how_many_lines_it_ignored(tmp_path, capsys):
    lines = synthetic_accuracy_lines()
    once = tmp_path / "once" / "log.txt"
    toy_log.append_lines(once, lines)
    twice = tmp_path / "twice" / "log.txt"
    toy_log.append_lines(twice, lines + lines[:4] + [lines[0].rsplit(" ", 1)[0] + " 1.0"])
    status, expected, err = cli(capsys, "-a", "-l", once)
    assert status == 0 and "duplicate" not in err
    status, out, err = cli(capsys, "-a", "-l", twice)
    assert status == 0
    assert out.split("wrote")[0] == expected.split("wrote")[0]
    (note,) = err.strip().splitlines()
    assert note.startswith("main.py: note: ") and "5 duplicate lines" in note
    assert toy_log.unique_records(toy_log.read_log(twice))[1] == 5


# ---------------------------------------------------------------------------------------------
# 7. only regular files are logs
# ---------------------------------------------------------------------------------------------

@needs_fifo
@pytest.mark.parametrize("grid", [[], ["-s", "0-1"]], ids=["single", "grid"])
def test_a_fifo_log_is_refused_at_once(tmp_path, grid):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *SINGLE, *grid, "-l", str(fifo)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, MPLBACKEND="Agg"))
    assert result.returncode == 1
    one_error_line(result.stderr, str(fifo), "FIFO", "not a regular file")


@needs_fifo
def test_analysing_a_fifo_is_refused(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    status, _, err = cli(capsys, "-a", "-l", fifo)
    assert status == 1
    one_error_line(err, str(fifo), "FIFO", "not a regular file")


@pytest.mark.parametrize("target", ["/dev/null", "folder"])
def test_devices_and_directories_are_refused(tmp_path, capsys, target):
    if target == "folder":
        path = tmp_path / target
        path.mkdir()
    else:
        path = Path(target)
        if not path.exists():
            pytest.skip(f"no {target}")
    status, _, err = cli(capsys, *SINGLE, "-l", path)
    assert status == 1
    one_error_line(err, str(path), "not a regular file")
    status, _, err = cli(capsys, "-a", "-l", path)
    assert status == 1
    one_error_line(err, str(path), "not a regular file")
