"""The paper's experiment grid (datasets x criteria x samples per class x seeds) and its shell scripts.

``python main.py -g [-rl | -nt SIGMA]`` writes one script per (dataset, criterion) with one
``python main.py`` line per run of the grid. Kept free of torch: generating text needs no model.
"""
from pathlib import Path

from pruning_toolkit import files
from pruning_toolkit.toy_vocabulary import CRITERIA, DATASETS, SAMPLES_PER_CLASS, SEEDS


def folder_and_log(ranklog=False, noisy_sigma=0.0):
    """Script folder and log file of a generated sweep: plain, rank analysis or noisy test."""
    if ranklog:
        return Path("scripts-rankanalysis"), "./output-rankanalysis/log.txt"
    if noisy_sigma > 0:
        return Path(f"scripts-noisytest-{noisy_sigma:g}"), f"./output-noisytest-{noisy_sigma:g}/log.txt"
    return Path("scripts"), "./output/log.txt"


def write_scripts(root=".", ranklog=False, noisy_sigma=0.0):
    """Write one shell script per (dataset, criterion) with one ``python main.py`` line per run.

    Each script holds a line per samples-per-class value and seed of the paper's grid and
    creates its output folder. Each is written to a temporary file and renamed, so a failed write
    (a full disk) leaves the previous script, never a truncated one. Returns the paths written.
    """
    folder, log = folder_and_log(ranklog, noisy_sigma)
    folder = Path(root) / folder
    folder.mkdir(parents=True, exist_ok=True)
    extra = " -rl" if ranklog else (f" -nt {noisy_sigma:g}" if noisy_sigma > 0 else "")
    written = []
    for dataset in DATASETS:
        for criterion in CRITERIA:
            lines = ["#!/bin/bash", f"mkdir -p {Path(log).parent.as_posix()}"]
            lines += [f"python main.py -d {dataset} -c {criterion} -n {n} -s {seed} -l {log}{extra}"
                      for n in SAMPLES_PER_CLASS for seed in SEEDS]
            path = folder / f"{dataset}-{criterion}.sh"
            text = "\n".join(lines) + "\n"
            files.write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), mode=0o755)
            written.append(path)
    return written
