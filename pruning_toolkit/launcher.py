"""Jobs on a Slurm cluster, or as local subprocesses, through submitit: submit, follow, report.

Both command lines (``main.py`` grids, the LEAN pruning scripts) take the same options
(:func:`add_arguments`). Without ``--launcher`` nothing is submitted. Jobs write their own
result shards; the caller merges them, so a job that dies leaves nothing half-merged and a
later call with the same arguments collects what finished and submits only what is missing.
"""
import json
import os
import sys
import time
from pathlib import Path

LAUNCHERS = ("local", "slurm")
SUBMISSION = "submitted.json"


class JobsFailed(ValueError):
    """Some jobs ended with an error; the message names them and their log files."""


def add_arguments(parser, jobs_help=None):
    group = parser.add_argument_group("jobs (submitit)")
    group.add_argument("--launcher", choices=LAUNCHERS, default=None,
                       help="run as jobs: local subprocesses or a Slurm job array (default: in this process)")
    group.add_argument("--slurm-partition", default=None, help="Slurm partition")
    group.add_argument("--slurm-time", type=int, default=240, help="time limit of a job in minutes (240)")
    group.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job (0)")
    group.add_argument("--slurm-cpus", type=int, default=2, help="CPUs per job (2)")
    group.add_argument("--job-logs", type=Path, default=None,
                       help="folder for the jobs' logs, shards and submission record")
    group.add_argument("--no-wait", action="store_true",
                       help="submit and return; the same command later collects what finished")
    if jobs_help:
        group.add_argument("--jobs", "-j", type=int, default=None, help=jobs_help)
    return group


def check_arguments(args):
    """A one-line reason the launcher options cannot be used, or None."""
    if args.launcher is None:
        used = [flag for flag, value in (("--slurm-partition", args.slurm_partition), ("--no-wait", args.no_wait),
                                         ("--job-logs", args.job_logs)) if value]
        return f"{used[0]} needs --launcher local or slurm" if used else None
    for flag, value, low in (("--slurm-time", args.slurm_time, 1), ("--slurm-gpus", args.slurm_gpus, 0),
                             ("--slurm-cpus", args.slurm_cpus, 1)):
        if value < low:
            return f"{flag} must be at least {low}, got {value}"
    return None


def make_executor(args, folder, name):
    """The submitit executor of ``args.launcher`` with the job resources of ``args``."""
    import submitit
    folder = Path(folder)
    if args.launcher == "local":
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(timeout_min=args.slurm_time)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder)
    except RuntimeError as error:          # submitit found no srun
        raise ValueError(f"--launcher slurm: this machine is not a Slurm node ({error}); run the command on the "
                         f"cluster, or use --launcher local") from None
    parameters = dict(job_name=name, time=args.slurm_time, cpus_per_task=args.slurm_cpus)
    if args.slurm_partition:
        parameters["partition"] = args.slurm_partition
    if args.slurm_gpus:
        parameters["gpus_per_node"] = args.slurm_gpus
    executor.update_parameters(**parameters)
    return executor


def submit(executor, function, argument_lists):
    """Submit ``function(*arguments)`` for every list of arguments: one job array on Slurm."""
    with executor.batch():
        jobs = [executor.submit(function, *arguments) for arguments in argument_lists]
    return jobs


def record_submission(folder, launcher, jobs, what):
    """Remember the submitted jobs so that a later call (after ``--no-wait``) finds them."""
    record = dict(launcher=launcher, jobs=[job.job_id for job in jobs], what=what)
    path = Path(folder) / SUBMISSION
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def forget_submission(folder):
    (Path(folder) / SUBMISSION).unlink(missing_ok=True)


def _alive(launcher, folder, job_id):
    if launcher == "local":                     # a local job's id is its process id
        try:
            os.kill(int(job_id), 0)
        except (OSError, ValueError):
            return False
        status = Path(f"/proc/{job_id}/stat")
        return not (status.is_file() and status.read_text().split(")")[-1].split()[0] == "Z")
    import submitit
    return submitit.SlurmJob(folder, job_id).state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING",
                                                       "COMPLETING", "SUSPENDED", "UNKNOWN")


def earlier_jobs_running(folder):
    """The ids of the jobs an earlier call submitted here that still run."""
    path = Path(folder) / SUBMISSION
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    return [job_id for job_id in record["jobs"] if _alive(record["launcher"], folder, job_id)]


def settle_earlier_jobs(folder, no_wait, collect, where):
    """Before submitting: if jobs an earlier call submitted still run, wait for them, or with ``no_wait``
    ``collect()`` what they finished into ``where`` and return False (nothing more to do now)."""
    running = earlier_jobs_running(folder)
    if running and no_wait:
        collect()
        print(f"{len(running)} earlier job(s) still running ({', '.join(running[:8])}); what they finished "
              f"is merged into {where}; call again to collect the rest", file=sys.stderr)
        return False
    if running:
        wait_for_ids(folder, running)
    return True


def wait_for_ids(folder, job_ids, poll_seconds=5, stream=None):
    """Block until the jobs of an earlier call have ended."""
    stream = stream or sys.stderr
    record = json.loads((Path(folder) / SUBMISSION).read_text())
    while True:
        running = [job_id for job_id in job_ids if _alive(record["launcher"], folder, job_id)]
        if not running:
            return
        print(f"waiting for {len(running)} earlier job(s): {', '.join(running[:8])}", file=stream, flush=True)
        time.sleep(poll_seconds)


def follow(jobs, poll_seconds=2, stream=None):
    """Show jobs done / running / failed until all have ended; returns the failed ones."""
    stream = stream or sys.stderr
    shown = None
    while True:
        states = [_outcome(job) for job in jobs]
        counts = (states.count("done"), states.count("running"), states.count("failed"))
        if counts != shown:
            print(f"jobs: {counts[0]} done, {counts[1]} running, {counts[2]} failed (of {len(jobs)})",
                  file=stream, flush=True)
            shown = counts
        if not counts[1]:
            return [job for job, state in zip(jobs, states) if state == "failed"]
        time.sleep(poll_seconds)


def _outcome(job):
    if not job.done():
        return "running"
    try:
        return "failed" if job.exception() is not None else "done"
    except Exception:            # submitit raises when a job left no result at all (killed)
        return "failed"


def failure_message(failed):
    """One line naming the failed jobs and their log files."""
    shown = "; ".join(f"job {job.job_id} (log {job.paths.stderr})" for job in failed[:5])
    more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
    return (f"{len(failed)} job(s) failed: {shown}{more}; what they finished is kept, "
            f"the same command submits the rest again")
