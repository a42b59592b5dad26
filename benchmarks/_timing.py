"""The timing the speed benchmarks share: the best of a few runs after one warm-up run."""
import time


def best_seconds(function, repeats: int = 3, clock=time.perf_counter) -> float:
    """Shortest of ``repeats`` runs of ``function()`` by ``clock`` (wall-clock by default;
    ``time.process_time`` for the CPU time of this process), after one warm-up run."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        function()
        best = min(best, clock() - start)
    return best
