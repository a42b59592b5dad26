"""Several threads sharing one model, or one explainer, get the results of sequential calls;
and a thread that only runs the model meanwhile gets unchanged predictions (issue 20)."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from test_contract import EXPLAINERS, data, kinds_of, make, uses_model

THREADS, CALLS = 4, 5


@pytest.mark.parametrize("name", [name for name in EXPLAINERS if uses_model(name)])
def test_threads_sharing_a_model_and_an_explainer_get_sequential_results(name):
    model, x = data(kinds_of(name)[0])
    explainer = make(name, model, x)
    inputs = [x[i % len(x):i % len(x) + 2] for i in range(THREADS * CALLS)]
    targets = [i % 5 for i in range(THREADS * CALLS)]
    expected = [explainer(a, t) for a, t in zip(inputs, targets)]
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(explainer, inputs, targets))
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [name for name in EXPLAINERS if uses_model(name)])
def test_a_thread_using_the_model_meanwhile_sees_no_hook(name):
    model, x = data(kinds_of(name)[0])
    with torch.no_grad():
        expected = model(x)
    stop, wrong, runs = threading.Event(), [], [0]

    def predict_meanwhile():
        while not stop.is_set():
            with torch.no_grad():
                if not torch.allclose(model(x), expected, atol=1e-6):
                    wrong.append(1)
            runs[0] += 1

    thread = threading.Thread(target=predict_meanwhile)
    thread.start()
    try:
        for target in range(5):
            make(name, model, x)(x, target)
    finally:
        stop.set()
        thread.join()
    assert runs[0] > 0 and wrong == []
