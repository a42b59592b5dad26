"""DeepLIFT: summation-to-delta errors of pellucid and Captum on the test models, and speed.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_deeplift.py
Prints, per model, max_i |sum(C_i) - (f(x) - f(x0))| / |f(x) - f(x0)| over a batch (or the
exception a peer raises; shap's DeepExplainer gets the first baseline as its background), then
seconds per call and their ratio to Captum and to one bare forward + backward pass of the
stacked batch, measured in this run.
"""
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_deeplift import (MODELS, make_data, make_model, relative_errors,  # noqa: E402
                           target_delta)

from pellucid.explain import DeepLift  # noqa: E402

warnings.filterwarnings("ignore")


def captum_totals(model, x, baseline, targets):
    from captum.attr import DeepLift as CaptumDeepLift
    attributions = CaptumDeepLift(model).attribute(x, baseline, target=targets).detach()
    return attributions.flatten(1).sum(1)


def shap_totals(model, x, baseline, targets):
    """shap's DeepExplainer with the first baseline as its one-sample background."""
    import numpy as np
    import shap
    values = np.asarray(shap.DeepExplainer(model, baseline[:1]).shap_values(
        x, check_additivity=False))
    totals = torch.as_tensor(values.reshape(len(x), -1, values.shape[-1]).sum(1))
    return totals[torch.arange(len(x)), targets].float()


def peer_error(totals_function, model, x, baseline, targets, delta):
    try:
        return f"{relative_errors(totals_function(model, x, baseline, targets), delta):.2e}"
    except Exception as error:  # noqa: BLE001 - report what the peer does
        return type(error).__name__


def completeness_table():
    print(f"{'model':<20}{'rescale':>10}{'reveal_cancel':>15}{'captum':>14}{'shap':>14}")
    for name in MODELS:
        model = make_model(name)
        x, baseline = make_data(name)
        targets = torch.arange(len(x)) % 3
        delta = target_delta(model, x, baseline, targets)
        ours = [relative_errors(DeepLift(model, baseline=baseline, rule=rule, progress=False)(
            x, targets).flatten(1).sum(1), delta) for rule in ("rescale", "reveal_cancel")]
        captum = peer_error(captum_totals, model, x, baseline, targets, delta)
        shap_delta = target_delta(model, x, baseline[:1].expand_as(x), targets)
        shap = peer_error(shap_totals, model, x, baseline, targets, shap_delta)
        print(f"{name:<20}{ours[0]:>10.2e}{ours[1]:>15.2e}{captum:>14}{shap:>14}")


def best_time(function, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def speed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 10)).eval()
    x, baseline = torch.rand(32, 3, 32, 32), torch.zeros(32, 3, 32, 32)
    targets = torch.zeros(32, dtype=torch.long)

    def bare(streams):
        leaf = torch.cat([x] * streams).requires_grad_(True)
        torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)

    from captum.attr import DeepLift as CaptumDeepLift
    captum = best_time(lambda: CaptumDeepLift(model).attribute(x, baseline, target=targets))
    print("\nspeed, 32 images 3x32x32, small CNN, 1 thread (seconds, best of 5)")
    print(f"captum DeepLift            {captum:.4f}")
    for rule, streams in (("rescale", 2), ("reveal_cancel", 4)):
        explainer = DeepLift(model, rule=rule, batch_size=32 * streams, progress=False)
        ours = best_time(lambda: explainer(x, targets))
        raw = best_time(lambda: bare(streams))
        print(f"pellucid {rule:<17} {ours:.4f}  x{ours / captum:.2f} captum, "
              f"x{ours / raw:.2f} bare fwd+bwd of the {streams}N stacked batch")


if __name__ == "__main__":
    torch.set_num_threads(1)
    completeness_table()
    speed()
