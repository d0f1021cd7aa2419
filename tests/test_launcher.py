"""Grids and pruning runs as submitit jobs: local executor runs, shards, failures, Slurm parameters."""
import argparse
import json
from pathlib import Path

import pytest

from pruning_toolkit import launcher, toy_grid, toy_log

RUNS = toy_grid.grid_runs(["moon"], ["lrp", "weight"], [1, 2], [0, 1])


def options(tmp_path, **overrides):
    values = dict(launcher="local", slurm_partition=None, slurm_time=30, slurm_gpus=0, slurm_cpus=1,
                  job_logs=tmp_path / "jobs", no_wait=False)
    values.update(overrides)
    return argparse.Namespace(**values)


def log_lines(path):
    return sorted(line for line in Path(path).read_text().splitlines() if line)


@pytest.fixture(scope="module")
def one_process_lines(tmp_path_factory):
    path = tmp_path_factory.mktemp("one") / "log.txt"
    toy_grid.run_grid(RUNS, path, jobs=1)
    return log_lines(path)


def test_a_grid_split_over_three_local_jobs_gives_the_lines_of_one_process(tmp_path, one_process_lines):
    summary = toy_grid.launch_grid(RUNS, tmp_path / "log.txt", options(tmp_path), jobs=3)
    assert (summary.requested, summary.skipped, summary.done) == (len(RUNS), 0, len(RUNS))
    assert log_lines(tmp_path / "log.txt") == one_process_lines
    assert len(list((tmp_path / "jobs" / "shards").glob("*.txt"))) == 3
    again = toy_grid.launch_grid(RUNS, tmp_path / "log.txt", options(tmp_path), jobs=3)   # nothing left
    assert (again.skipped, again.done) == (len(RUNS), 0)
    assert log_lines(tmp_path / "log.txt") == one_process_lines


def test_what_a_killed_job_left_is_merged_whole_and_the_rest_runs_again(tmp_path, one_process_lines):
    shards = tmp_path / "jobs" / "shards"
    shards.mkdir(parents=True)
    by_run = {}
    for line in one_process_lines:
        by_run.setdefault(line.split("-scenario:")[0], []).append(line)
    blocks = list(by_run.values())
    # a killed job: two runs complete, a third with half its lines, then a torn line
    left = blocks[0] + blocks[1] + blocks[2][:2]
    (shards / "killed-0000.txt").write_text("\n".join(left) + "\n" + blocks[3][0][:25])
    (tmp_path / "jobs" / launcher.SUBMISSION).write_text(json.dumps({"launcher": "local", "jobs": ["999999999"],
                                                                      "what": "log"}))
    summary = toy_grid.launch_grid(RUNS, tmp_path / "log.txt", options(tmp_path), jobs=2)
    assert summary.skipped == 2 and summary.done == len(RUNS) - 2
    lines = Path(tmp_path / "log.txt").read_text().splitlines()
    assert sorted(lines) == one_process_lines                  # no duplicate, no torn line
    assert not (tmp_path / "jobs" / launcher.SUBMISSION).exists()


def test_failed_jobs_are_named_with_their_logs_and_a_resubmission_runs_only_what_is_missing(tmp_path,
                                                                                          one_process_lines):
    with pytest.raises(launcher.JobsFailed, match=r"1 job\(s\) failed: job \d+ \(log .*\.err\)"):
        toy_grid.launch_grid(RUNS, tmp_path / "log.txt", options(tmp_path), device="cuda:99", jobs=1)
    summary = toy_grid.launch_grid(RUNS, tmp_path / "log.txt", options(tmp_path), jobs=2)
    assert summary.done == len(RUNS)
    assert log_lines(tmp_path / "log.txt") == one_process_lines


def test_no_wait_submits_and_a_later_call_collects(tmp_path, one_process_lines):
    assert toy_grid.launch_grid(RUNS, tmp_path / "log.txt", options(tmp_path, no_wait=True), jobs=2) is None
    record = json.loads((tmp_path / "jobs" / launcher.SUBMISSION).read_text())
    assert len(record["jobs"]) == 2
    toy_grid.launch_grid(RUNS, tmp_path / "log.txt", options(tmp_path), jobs=2)   # waits for them, merges
    assert log_lines(tmp_path / "log.txt") == one_process_lines


def test_the_slurm_executor_receives_the_requested_resources(tmp_path, monkeypatch):
    import submitit
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))   # no cluster here
    executor = launcher.make_executor(options(tmp_path, launcher="slurm", slurm_partition="gpu", slurm_time=90,
                                              slurm_gpus=1, slurm_cpus=4), tmp_path / "logs", "toy-grid")
    assert isinstance(executor, submitit.SlurmExecutor)
    assert {k: executor.parameters[k] for k in ("partition", "time", "gpus_per_node", "cpus_per_task", "job_name")} \
        == {"partition": "gpu", "time": 90, "gpus_per_node": 1, "cpus_per_task": 4, "job_name": "toy-grid"}
    script = executor._make_submission_file_text("python -m job", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4"):
        assert line in script


@pytest.mark.parametrize("flags, message", [
    (["--no-wait"], "--no-wait needs --launcher local or slurm"),
    (["--launcher", "local"], "--launcher runs grids"),
    (["--launcher", "slurm", "-s", "0-3", "--slurm-time", "0"], "--slurm-time must be at least 1"),
])
def test_launcher_flags_are_checked_before_any_work(flags, message, tmp_path, capsys):
    from pruning_toolkit import toy_cli
    assert toy_cli.main(["-d", "moon", "-c", "lrp", "-l", str(tmp_path / "log.txt"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "log.txt").exists()


def test_split_runs_keeps_order_and_sizes_within_one():
    chunks = toy_grid.split_runs(list(range(10)), 3)
    assert [len(c) for c in chunks] == [4, 3, 3] and sum(chunks, []) == list(range(10))
    assert toy_grid.split_runs([1, 2], 5) == [[1], [2]]


def test_a_torn_shard_line_is_left_out(tmp_path, one_process_lines):
    shard = tmp_path / "shard.txt"
    shard.write_text(one_process_lines[0] + "\n" + one_process_lines[1][:30])
    assert toy_grid.complete_shard_lines(shard) == [one_process_lines[0]]
    assert toy_log.parse_line(one_process_lines[0])


def descendants(pid):
    """The process ids below ``pid`` (from /proc), deepest last."""
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").is_file() else []
            found += [int(c) for c in children]
            frontier += [int(c) for c in children]
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the job's processes")
def test_a_job_killed_mid_way_and_resubmitted_completes_without_duplicate_or_torn_lines(tmp_path):
    import os
    import signal
    import time
    runs = toy_grid.grid_runs(["moon"], ["lrp", "weight", "grad"], [1, 2], [0, 1, 2, 3])
    reference = tmp_path / "reference.txt"
    toy_grid.run_grid(runs, reference, jobs=1)
    assert toy_grid.launch_grid(runs, tmp_path / "log.txt", options(tmp_path, no_wait=True), jobs=1) is None
    job = json.loads((tmp_path / "jobs" / launcher.SUBMISSION).read_text())["jobs"][0]
    shards = tmp_path / "jobs" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and not any(s.stat().st_size for s in shards.glob("*.txt")):
        time.sleep(0.05)
    for pid in [int(job)] + descendants(int(job)):        # kill -9 the job and what it started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    summary = toy_grid.launch_grid(runs, tmp_path / "log.txt", options(tmp_path), jobs=2)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert sorted(lines) == log_lines(reference) and len(lines) == len(set(lines))
    assert summary.requested == len(runs) and summary.skipped + summary.done == len(runs)
    assert summary.skipped > 0 and summary.done > 0      # killed after some runs, the rest ran again
