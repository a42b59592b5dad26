"""KernelShap and Lime against the bare batched forward passes they need, next to shap's
KernelExplainer and lime's LimeImageExplainer on the same model, image, superpixels and number
of evaluations, in one run; then the peak memory of 20 000 samples on a 224 x 224 image.

Speed: one 224 x 224 image (smooth random colours, so SLIC gives compact superpixels), about
50 SLIC superpixels, a 3-conv CNN (cheap: building masks and perturbed inputs weighs most) and a
ResNet-18-like network (BasicBlock x [2, 2, 2, 2], from ``torch.nn``) at 96 x 96 for a model
whose passes dominate. Each explainer evaluates ``--samples`` coalitions; the bare reference runs
as many forward passes of pre-built inputs, ``batch_size`` at a time. The peers get the same
model, superpixels and number of evaluations, as their users would run them:

- shap: ``KernelExplainer(f, zeros((1, M)), l1_reg=False)`` on ``f(z)`` = the model on the image
  with the superpixels of ``z`` kept and the others at the baseline (shap's image recipe);
- lime: ``LimeImageExplainer().explain_instance(image, classifier_fn, labels=(0,),
  top_labels=None, hide_color=0, num_samples, batch_size, segmentation_fn)`` (channels last,
  ``classifier_fn`` converts to a tensor and runs the model).

Runs are interleaved, best of ``--repeats``; wall-clock and process CPU time are both given
(other processes share the cores).

Memory: in a fresh child process per case (glibc's default malloc), the peak resident memory
(``VmHWM``) above the memory before the call of KernelShap, Lime, ShapleyValueSampling (about
20 000 evaluations each) and FeatureAblation (its ``M + 1``) on one 224 x 224 image (SLIC, about
100 superpixels, batch 64, a cheap pooled linear model), after a warm-up call; the model's own
memory (the bare passes minus their batch of inputs) is subtracted, and the rest compared with
the budget of ``batch_size`` perturbed copies plus one batch of full-size float32 masks
(accounting in :func:`memory`).

    python benchmarks/bench_feature_groups.py [--repeats 3] [--threads 1] [--samples 512]
"""
from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import torch

from bench_rise_sobol import resnet18, small_cnn, timed
from pellucid import features
from pellucid.explain import FeatureAblation, KernelShap, Lime, ShapleyValueSampling


def smooth_image(side: int, seed: int = 0) -> torch.Tensor:
    """A ``(1, 3, side, side)`` image of smooth random colours in [0, 1]."""
    coarse = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic",
                                           align_corners=False).clamp(0, 1)


def bare_forward(model: torch.nn.Module, batch: torch.Tensor, n_passes: int) -> None:
    with torch.inference_mode():
        for start in range(0, n_passes, len(batch)):
            model(batch[:min(len(batch), n_passes - start)])


def shap_kernel(model, image, mask, n_samples, batch_size) -> Callable[[], None]:
    import shap
    m = int(mask.max()) + 1
    flat = mask.reshape(-1).numpy()

    def f(z: np.ndarray) -> np.ndarray:
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(z), batch_size):
                keep = torch.from_numpy(z[start:start + batch_size][:, flat]).float()
                batch = image * keep.view(-1, 1, *mask.shape)  # baseline 0
                outputs.append(model(batch)[:, :1].numpy())
        return np.concatenate(outputs)

    explainer = shap.KernelExplainer(f, np.zeros((1, m)))
    return lambda: explainer.shap_values(np.ones((1, m)), nsamples=n_samples, l1_reg=False,
                                         silent=True)


def lime_image(model, image, mask, n_samples, batch_size) -> Callable[[], None]:
    from lime.lime_image import LimeImageExplainer
    array = image[0].permute(1, 2, 0).double().numpy()
    segments = mask.numpy()

    def classifier(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
            return model(x).numpy()

    explainer = LimeImageExplainer(random_state=0)
    return lambda: explainer.explain_instance(
        array, classifier, labels=(0,), top_labels=None, hide_color=0, num_samples=n_samples,
        batch_size=batch_size, segmentation_fn=lambda _: segments, random_seed=0)


def speed(args: argparse.Namespace) -> None:
    batch_size, n = args.batch_size, args.samples
    print(f"speed: 1 image, ~50 SLIC superpixels, {n} evaluations, batch_size {batch_size}, "
          f"{args.threads} thread(s), best of {args.repeats}; ratio = method / bare passes")
    for label, model, side in (("small CNN 224", small_cnn(), 224),
                               ("ResNet-18 96", resnet18(), 96)):
        image = smooth_image(side)
        mask = features.slic(image, n_segments=50)[0]
        m = int(mask.max()) + 1
        batch = torch.rand(batch_size, 3, side, side, generator=torch.Generator().manual_seed(1))
        kernel = KernelShap(model, nb_samples=n, feature_mask=mask, batch_size=batch_size,
                            progress=False)
        lime = Lime(model, nb_samples=n, feature_mask=mask, batch_size=batch_size,
                    progress=False)
        methods = {  # name: (call, forward passes it makes)
            "pellucid KernelShap": (lambda: kernel(image, 0), n + 2),
            "shap KernelExplainer": (shap_kernel(model, image, mask, n, batch_size), n + 2),
            "pellucid Lime": (lambda: lime(image, 0), n),
            "lime LimeImageExplainer": (lime_image(model, image, mask, n, batch_size), n),
        }
        bare_forward(model, batch, batch_size)  # warm-up
        for name, (explain, passes) in methods.items():
            explain()  # warm-up
            runs, bare = [], []
            for _ in range(args.repeats):  # interleaved, so load changes hit both
                runs.append(timed(explain))
                bare.append(timed(functools.partial(bare_forward, model, batch, passes)))
            (wall, cpu), (bare_wall, bare_cpu) = ([min(c) for c in zip(*r)] for r in (runs,
                                                                                        bare))
            print(f"{label:14s} M={m:3d} {name:24s} wall {wall:6.2f} s vs bare {bare_wall:6.2f}"
                  f" s = {wall / bare_wall:5.2f}x; CPU {cpu:6.2f} s vs {bare_cpu:6.2f} s = "
                  f"{cpu / bare_cpu:5.2f}x", flush=True)


def pooled_linear() -> torch.nn.Module:
    """A cheap model for the memory runs (8 x 8 average pooling, then linear): its passes are
    fast and its activations small, so the explainer's own memory shows."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.AvgPool2d(8), torch.nn.Flatten(),
                               torch.nn.Linear(3 * 28 * 28, 10)).eval()


def status_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last :func:`reset_peak`) in KiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def reset_peak() -> None:
    """Linux: restart ``VmHWM`` from the current RSS (``ru_maxrss`` cannot be reset and is
    inherited from the parent)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def memory_case(case: str, n_samples: int, batch_size: int) -> dict:
    """Run in a child: peak resident memory (KiB) of one case above the memory before it,
    after a warm-up call of the same case on ``batch_size`` samples (imports, lazy
    initialisations and the model's first pass are one-time costs, kept out of every case)."""
    model, image = pooled_linear(), smooth_image(224)
    mask = features.slic(image, n_segments=100)[0]
    m = int(mask.max()) + 1
    passes = -(-n_samples // batch_size)
    classes = {"KernelShap": KernelShap, "Lime": Lime, "FeatureAblation": FeatureAblation,
               "ShapleyValueSampling": ShapleyValueSampling}

    def nb_samples(n: int) -> int:  # ShapleyValueSampling: permutations of M - 1 evaluations
        return max(2, round(n / (m - 1))) if case == "ShapleyValueSampling" else n

    def run(n: int) -> None:
        if case == "bare":  # the same passes as the explainers over one pre-built batch
            bare_forward(model, torch.rand(batch_size, 3, 224, 224),
                         -(-n // batch_size) * batch_size)
            return
        kwargs = {} if case == "FeatureAblation" else {"nb_samples": nb_samples(n)}
        classes[case](model, feature_mask=mask, batch_size=batch_size, progress=False,
                      **kwargs)(image, 0)
    run(batch_size)                          # warm-up
    reset_peak()
    before = status_kib("VmRSS")
    run(n_samples)
    evaluations = {"bare": passes * batch_size, "KernelShap": n_samples + 2, "Lime": n_samples,
                   "FeatureAblation": m + 1,
                   "ShapleyValueSampling": 2 * -(-nb_samples(n_samples) // 2) * (m - 1) + 2}
    return {"peak_kib": status_kib("VmHWM") - before, "groups": m,
            "evaluations": evaluations[case]}


def memory(args: argparse.Namespace) -> None:
    """The memory cases, each in a child process (glibc's default malloc).

    Accounting: ``bare`` is the peak of the same number of passes over one pre-built batch of
    ``batch_size`` inputs (allocated inside the measured window), so the model's own memory
    (activations, allocator slack over the passes) is ``bare`` minus that batch. An explainer's
    own memory is its peak minus the model's own memory; the budget is ``batch_size`` perturbed
    copies of the input plus one batch of full-size masks in the input's dtype (float32). All
    peaks are ``VmHWM`` minus ``VmRSS`` at the start of the call, in MiB."""
    n, batch_size, results = 20_000, args.batch_size, {}
    for case in ("bare", "KernelShap", "Lime", "ShapleyValueSampling", "FeatureAblation"):
        out = subprocess.run([sys.executable, __file__, "--memory-case", case, "--batch-size",
                              str(batch_size)], capture_output=True, text=True, check=True)
        results[case] = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 1 / 1024
    copies = batch_size * 3 * 224 * 224 * 4 / 2 ** 20
    masks = batch_size * 224 * 224 * 4 / 2 ** 20
    budget = copies + masks
    bare = results["bare"]["peak_kib"] * mib
    model_own = max(0.0, bare - copies)  # a few pages of the batch may not be resident
    print(f"\nmemory: {n} samples, one 224 x 224 image, {results['KernelShap']['groups']} SLIC "
          f"superpixels, batch_size {batch_size}, pooled linear model, glibc's default malloc; "
          "peak RSS above the start of the call")
    print(f"bare passes ({results['bare']['evaluations']} inputs): {bare:6.1f} MiB = one batch "
          f"of inputs {copies:.1f} + the model's own {model_own:.1f}")
    print(f"budget: {batch_size} perturbed copies {copies:.1f} + one batch of float32 masks "
          f"{masks:.1f} = {budget:.1f} MiB")
    for case in ("KernelShap", "Lime", "ShapleyValueSampling", "FeatureAblation"):
        peak = results[case]["peak_kib"] * mib
        own = peak - model_own
        print(f"{case:20s} ({results[case]['evaluations']:5d} evaluations): peak {peak:6.1f} MiB"
              f", own {own:6.1f} MiB = {own / budget:4.2f} x budget "
              f"({'within' if own <= budget else 'OVER'})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, 20_000, args.batch_size)))
        return
    if not args.skip_speed:
        speed(args)
    memory(args)


if __name__ == "__main__":
    main()
