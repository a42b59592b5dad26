"""DeepLIFT: summation-to-delta errors of pellucid and Captum on the test models, and speed.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_deeplift.py
Prints, per model, max_i |sum(C_i) - (f(x) - f(x0))| / |f(x) - f(x0)| over a batch (or the
exception a peer raises; shap's DeepExplainer gets the first baseline as its background), then
seconds per call and their ratio to Captum and to one bare forward + backward pass of the
stacked batch, measured in this run. Then the same error on the architectures of
tests/architectures.py (worst over zero and blurred baselines, 1 and 3 images, the class whose
score changes most), the time of a DeepLIFT and an LRP call as a ratio to one forward +
backward of the same (unstacked) batch, next to Captum's DeepLift where Captum runs, and LRP's
conservation error per architecture and composite.
"""
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from architectures import ARCHITECTURES, architecture_inputs, make_architecture  # noqa: E402
from test_deeplift import (MODELS, make_data, make_model, relative_errors,  # noqa: E402
                           target_delta)

from pellucid._baselines import make_baseline  # noqa: E402

from pellucid.explain import LRP, DeepLift  # noqa: E402

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


def architecture_errors(name):
    """Worst relative error of each rule and of Captum over the baselines and batch sizes."""
    model = make_architecture(name)
    worst = {"rescale": 0.0, "reveal_cancel": 0.0}
    captum = []
    for n in (1, 3):
        x = architecture_inputs(n)
        for baseline in (0.0, "blur"):
            reference = make_baseline(baseline, x)
            with torch.no_grad():
                targets = (model(x) - model(reference)).abs().argmax(1)
            delta = target_delta(model, x, reference, targets)
            for rule in worst:
                totals = DeepLift(model, baseline=baseline, rule=rule, progress=False)(
                    x, targets).flatten(1).sum(1)
                worst[rule] = max(worst[rule], relative_errors(totals, delta))
            captum.append(peer_error(captum_totals, model, x, reference, targets, delta))
    raised = [error for error in captum if not error[0].isdigit()]
    return worst, raised[0] if raised else f"{max(map(float, captum)):.2e}"


def architecture_table():
    print(f"\n{'architecture':<14}{'rescale':>10}{'reveal_cancel':>15}{'captum':>20}")
    for name in ARCHITECTURES:
        worst, captum = architecture_errors(name)
        print(f"{name:<14}{worst['rescale']:>10.1e}{worst['reveal_cancel']:>15.1e}{captum:>20}")


def architecture_speed(n=16):
    print(f"\nspeed on the architectures, {n} images 3x16x16, 1 thread: seconds per call (best "
          "of 3) and ratio to one forward + backward of the same batch")
    x = architecture_inputs(n)
    targets = torch.zeros(n, dtype=torch.long)
    from captum.attr import DeepLift as CaptumDeepLift
    for name in ARCHITECTURES:
        model = make_architecture(name)

        def bare():
            leaf = x.clone().requires_grad_(True)
            torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)

        raw = best_time(bare, 3)
        cells = []
        for rule, streams in (("rescale", 2), ("reveal_cancel", 4)):
            explainer = DeepLift(model, rule=rule, batch_size=n * streams, progress=False)
            ours = best_time(lambda: explainer(x, targets), 3)
            cells.append(f"{rule} {ours:.4f}s x{ours / raw:.1f}")
        lrp = LRP(model, batch_size=n, progress=False)
        ours = best_time(lambda: lrp(x, targets), 3)
        cells.append(f"LRP {ours:.4f}s x{ours / raw:.1f}")
        try:
            captum = best_time(lambda: CaptumDeepLift(model).attribute(
                x, torch.zeros_like(x), target=targets), 3)
            cells.append(f"captum {captum:.4f}s x{captum / raw:.1f}")
        except Exception as error:  # noqa: BLE001 - report what the peer does
            cells.append(f"captum {type(error).__name__}")
        print(f"{name:<14}fwd+bwd {raw:.4f}s  " + "  ".join(cells))


def lrp_conservation(n=3):
    """max_i |sum(R_i) - f_c(x)| / |f_c(x)| of each composite (predicted classes): biases,
    unfolded batch-norm shifts, epsilon and the LN-rule absorb relevance, so this is not 0."""
    composites = ("epsilon", "epsilon_plus", "epsilon_gamma", "epsilon_alpha2_beta1", "zplus",
                  "epsilon_plus_flat", "epsilon_gamma_box")
    bounds = {"epsilon_gamma_box": {"low": 0.0, "high": 1.0}}  # the images are in [0, 1]
    print(f"\nLRP conservation error\n{'architecture':<14}" + "".join(
        f"{name:>22}" for name in composites))
    x = architecture_inputs(n)
    for name in ARCHITECTURES:
        model = make_architecture(name)
        with torch.no_grad():
            scores = model(x)
        targets = scores.argmax(1)
        expected = scores.gather(1, targets[:, None])[:, 0]
        errors = [relative_errors(LRP(model, composite=composite, progress=False,
                                      **bounds.get(composite, {}))(
            x, targets).flatten(1).sum(1), expected) for composite in composites]
        print(f"{name:<14}" + "".join(f"{error:>22.2e}" for error in errors))


if __name__ == "__main__":
    torch.set_num_threads(1)
    completeness_table()
    speed()
    architecture_table()
    architecture_speed()
    lrp_conservation()
