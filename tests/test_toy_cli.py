"""main.py as a user runs it: bad input, script generation, and a run with the shipped model."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import main
import toy_datasets
from pruning_toolkit import toy_log
from pruning_toolkit import toy_model

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, env=env, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("main.py: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["-d", "spiral"], ["--dataset", "spiral"]),
    (["-c", "random"], ["--criterion", "random"]),
    (["-r", "png"], ["--rendermode", "png"]),
    (["-cm", "NoSuchMap"], ["colormap", "NoSuchMap"]),
    (["-n", "0"], ["--numsamples", "at least 1"]),
    (["-n", "two"], ["--numsamples", "two"]),
    (["-s", "-3"], ["--seed"]),
    (["-nt", "-0.1"], ["--noisytest"]),
    (["-g", "-rl", "-nt", "0.1"], ["--ranklog", "--noisytest"]),
])
def test_bad_arguments_give_one_line_and_exit_2(args, fragments):
    result = run_cli(*args)
    assert result.returncode == 2
    assert_one_line_error(result, *fragments)


def test_unwritable_log_paths(tmp_path):
    assert_one_line_error(run_cli("-d", "moon", "-l", tmp_path), "cannot write log file", str(tmp_path))
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert_one_line_error(run_cli("-d", "moon", "-l", tmp_path / "file" / "log.txt"), "cannot write log file")


def test_analyze_missing_empty_and_malformed_logs(tmp_path):
    assert_one_line_error(run_cli("-a", "-l", tmp_path / "missing.txt"), "not found")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert_one_line_error(run_cli("-a", "-l", tmp_path / "empty.txt"), "empty")
    (tmp_path / "bad.txt").write_text("dataset:moon-criterion:lrp-n:2-s:0-scenario:train-stage:pre 99.0\n"
                                      "dataset:moon-criterion:lrp-n:2-s:0-scenario:train-stage:post ninety\n",
                                      encoding="utf-8")
    assert_one_line_error(run_cli("-a", "-l", tmp_path / "bad.txt"), "line 2", "not a number")


def test_rank_analysis_of_an_accuracy_log_says_what_is_missing(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("dataset:moon-criterion:lrp-n:2-s:0-scenario:train-stage:pre 99.0\n", encoding="utf-8")
    assert_one_line_error(run_cli("-a", "-rl", "-l", log), "no rankselection lines")


def test_reference_flags_and_defaults():
    args = main.build_parser().parse_args([])
    assert (args.dataset, args.criterion, args.numsamples, args.seed, args.rendermode, args.colormap,
            args.logfile, args.generate, args.analyze, args.ranklog, args.noisytest) == \
        ("mult", "lrp", 5, 1, "none", "Dark2", "./log.txt", False, False, False, 0.0)
    short = main.build_parser().parse_args("-d moon -c grad -n 7 -s 3 -r svg -cm Set1 -l x.txt -g -a -rl -nt 0.2"
                                           .split())
    long = main.build_parser().parse_args(["--dataset", "moon", "--criterion", "grad", "--numsamples", "7",
                                           "--seed", "3", "--rendermode", "svg", "--colormap", "Set1",
                                           "--logfile", "x.txt", "--generate", "--analyze", "--ranklog",
                                           "--noisytest", "0.2"])
    assert vars(short) == vars(long)


def generated_runs(folder):
    parser = main.build_parser()
    runs = {}
    for script in sorted(folder.glob("*.sh")):
        lines = script.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "#!/bin/bash" and lines[1].startswith("mkdir -p ")
        runs[script.name] = [parser.parse_args(line.split()[2:]) for line in lines[2:]]
        assert all(line.startswith("python main.py ") for line in lines[2:])
        for args in runs[script.name]:
            assert main.validate(args) is None and not args.grid
            ((args.dataset, args.criterion, args.numsamples, args.seed),) = [
                (r.dataset, r.criterion, r.samples_per_class, r.seed) for r in args.runs]
    return runs


@pytest.mark.parametrize("extra, folder, log, ranklog, sigma", [
    ([], "scripts", "./output/log.txt", False, 0.0),
    (["-rl"], "scripts-rankanalysis", "./output-rankanalysis/log.txt", True, 0.0),
    (["-nt", "0.3"], "scripts-noisytest-0.3", "./output-noisytest-0.3/log.txt", False, 0.3),
])
def test_generate_writes_400_runs_per_dataset_and_criterion(tmp_path, extra, folder, log, ranklog, sigma):
    result = run_cli("-g", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = generated_runs(tmp_path / folder)
    assert sorted(runs) == sorted(f"{d}-{c}.sh" for d in toy_datasets.DATASETS for c in toy_log.CRITERIA)
    for name, parsed in runs.items():
        dataset, criterion = name[:-3].split("-")
        assert len(parsed) == 400
        assert {(a.numsamples, a.seed) for a in parsed} == {(n, s) for n in (1, 2, 5, 10, 20, 50, 100, 200)
                                                            for s in range(50)}
        assert all((a.dataset, a.criterion, a.logfile, a.ranklog, a.noisytest, a.generate, a.analyze)
                   == (dataset, criterion, log, ranklog, sigma, False, False) for a in parsed)


@pytest.mark.skipif(not (toy_model.model_path("moon").is_file() and toy_datasets.training_set_path("moon").is_file()),
                    reason="shipped moon model or training set not present")
def test_single_run_appends_four_lines_and_creates_the_log_folder(tmp_path):
    log = tmp_path / "new" / "folder" / "log.txt"
    log_line = "dataset:moon-criterion:lrp-n:2-s:0-scenario:train-stage:pre 99.0"
    result = run_cli("-d", "moon", "-c", "weight", "-n", "2", "-s", "4", "-l", log)
    assert result.returncode == 0, result.stderr
    toy_log.append_lines(log, [log_line])
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [line.split(" ")[0] for line in lines[:4]] == [
        f"dataset:moon-criterion:weight-n:4-s:4-scenario:{scenario}-stage:{stage}"
        for stage in ("pre", "post") for scenario in ("train", "test")]
    assert result.stdout.splitlines()[:4] == lines[:4]
    assert lines[4] == log_line and len(toy_log.read_log(log)) == 5


@pytest.mark.skipif(not (toy_model.model_path("circle").is_file() and toy_datasets.training_set_path("circle").is_file()),
                    reason="shipped model missing")
def test_a_single_run_prints_the_pruned_neurons_per_layer(tmp_path, capsys):
    assert main.main(["-d", "circle", "-c", "weight", "-n", "1", "-s", "0", "-l", str(tmp_path / "log.txt")]) == 0
    out = capsys.readouterr().out.splitlines()
    counts = re.fullmatch(r"pruned neurons per hidden layer: (\d+) of 1000, (\d+) of 1000, (\d+) of 1000", out[4])
    assert counts is not None and sum(int(c) for c in counts.groups()) == 1000
