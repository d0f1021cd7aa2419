"""Command-line helpers shared by main.py and the example scripts: bad input is one line on
stderr and a non-zero exit status, never a usage dump or a traceback."""
import argparse
import sys


class OneLineErrorParser(argparse.ArgumentParser):
    """Report bad arguments as one line on stderr (no usage dump) and exit with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class UsageError(ValueError):
    """A flag value the user must change; reported as one line, exit status 2."""


def report_errors(prog, main, argv=None, interrupted="continue with --resume"):
    """Run ``main(argv)``; bad input becomes one line on stderr and a non-zero exit status
    (2: a flag to change, 1: a file or value that cannot be used, 130: Ctrl-C)."""
    try:
        main(argv)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"{prog}: {' '.join(str(error).split())[:600]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        return 130
    return 0
