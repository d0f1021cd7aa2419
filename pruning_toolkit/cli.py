"""Command-line helpers shared by main.py and the example scripts."""
import argparse


class OneLineErrorParser(argparse.ArgumentParser):
    """Report bad arguments as one line on stderr (no usage dump) and exit with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")
