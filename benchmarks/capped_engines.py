"""Chain-extraction engines that stop after a time cap, for timing the slow reference engine."""
import time


class TimeCap(Exception):
    """Raised by a capped chain finder when its time is up."""


def capped(make_finder, cap_seconds, stats):
    """Wrap an engine so that it stops after ``cap_seconds`` and counts its chains."""
    def factory(graph):
        finder = make_finder(graph)
        stats["start"] = time.perf_counter()
        stats["chains"] = 0
        stats["edges_kept"] = 0

        class Capped:
            def longest_chain(self):
                if time.perf_counter() - stats["start"] > cap_seconds:
                    raise TimeCap
                stats["chains"] += 1
                return finder.longest_chain()

            def remove_edges(self, edges):
                stats["edges_kept"] += len(edges)
                finder.remove_edges(edges)
        return Capped()
    return factory
