"""The timing the speed benchmarks share: the best of a few runs after one warm-up run, and
the ratio of two functions timed in alternation."""
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


def interleaved_best_seconds(first, second, repeats: int = 7, clock=time.perf_counter
                             ) -> tuple[float, float]:
    """Shortest of ``repeats`` runs of each function, the runs alternating (``first``,
    ``second``, ``first``, ...) after one warm-up run of each: a machine that slows down or
    speeds up during the measurement (a shared VM) affects both the same way, where timing one
    function's runs and then the other's puts the drift into their ratio."""
    first()
    second()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, function in enumerate((first, second)):
            start = clock()
            function()
            best[i] = min(best[i], clock() - start)
    return best[0], best[1]
