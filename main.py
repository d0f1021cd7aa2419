"""Command line of the "Pruning by Explaining" toy experiment: one pruning run, sweep scripts, log analysis.

    python main.py -d moon -c lrp -n 10 -s 1 -l ./output/log.txt    # one run, 4 log lines
    python main.py -d all -c all -n all -s 0-49 -l ./output/log.txt  # the paper's grid, resumable
    python main.py -f -d all -c all -n 5 -s 0 -l ./output-toy-figure/log.txt  # qualitative figure
    python main.py -g [-rl | -nt SIGMA]                              # write the sweep scripts
    python main.py -a -l ./output/log.txt [-rl]                      # plots / rank tables

The command line itself lives in ``pruning_toolkit.toy_cli``; this script only calls it.
"""
import sys

from pruning_toolkit.toy_cli import build_parser, main, validate

__all__ = ["build_parser", "main", "validate"]

if __name__ == "__main__":
    sys.exit(main())
