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

Memory: in a fresh child process per case, the peak resident memory (``VmHWM``) of
KernelShap / Lime with 20 000 samples on one 224 x 224 image (SLIC, about 100 superpixels,
batch 64, a cheap pooled linear model), above the memory before the call, next to the peak of
the bare forward passes of one batch (inputs + the model's activations). What the explainer holds
beyond the model's activations is compared with the budget of ``batch_size`` perturbed copies
plus one batch of full-size masks.

    python benchmarks/bench_feature_groups.py [--repeats 3] [--threads 1] [--samples 512]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import torch

from bench_rise_sobol import resnet18, small_cnn, timed
from pellucid import features
from pellucid.explain import KernelShap, Lime


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
    """Run in a child: peak resident memory (KiB) above the memory before the work."""
    model, image = pooled_linear(), smooth_image(224)
    mask = features.slic(image, n_segments=100)[0]
    with torch.inference_mode():
        model(image)
    reset_peak()
    before = status_kib("VmRSS")
    if case == "bare":
        bare_forward(model, torch.rand(batch_size, 3, 224, 224), batch_size)
    else:
        cls = KernelShap if case == "KernelShap" else Lime
        cls(model, nb_samples=n_samples, feature_mask=mask, batch_size=batch_size,
            progress=False)(image, 0)
    return {"peak_kib": status_kib("VmHWM") - before, "groups": int(mask.max()) + 1}


def memory(args: argparse.Namespace) -> None:
    for allocator, env in (("glibc defaults", {}),
                           ("MALLOC_MMAP_THRESHOLD_=65536", {"MALLOC_MMAP_THRESHOLD_": "65536"})):
        memory_table(args.batch_size, allocator, env)


def memory_table(batch_size: int, allocator: str, env: dict) -> None:
    """The memory cases in child processes under one malloc setting. With glibc's defaults
    the heap fragments (its mmap threshold grows after the first large free, then each pass's
    temporaries are carved from a heap that small long-lived objects keep from shrinking), so
    RSS creeps up over 20 000 passes although the live memory does not; a fixed mmap
    threshold shows the live memory."""
    n, results = 20_000, {}
    for case in ("bare", "KernelShap", "Lime"):
        out = subprocess.run([sys.executable, __file__, "--memory-case", case, "--batch-size",
                              str(batch_size)], capture_output=True, text=True, check=True,
                             env={**os.environ, **env})
        results[case] = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 1 / 1024
    copies = batch_size * 3 * 224 * 224 * 4 / 2 ** 20
    masks = batch_size * 224 * 224 * 4 / 2 ** 20
    activations = results["bare"]["peak_kib"] * mib - copies
    print(f"\nmemory: {n} samples, one 224 x 224 image, {results['KernelShap']['groups']} SLIC "
          f"superpixels, batch_size {batch_size}, pooled linear model, {allocator}; peak RSS above "
          "the start")
    print(f"bare passes of one batch: {results['bare']['peak_kib'] * mib:6.1f} MiB (inputs "
          f"{copies:.1f} MiB + the model's activations {activations:.1f} MiB)")
    budget = copies + masks
    for case in ("KernelShap", "Lime"):
        peak = results[case]["peak_kib"] * mib
        beyond = peak - activations
        print(f"{case:10s}: {peak:6.1f} MiB; beyond the model's activations {beyond:6.1f} MiB "
              f"vs budget {budget:.1f} MiB ({batch_size} perturbed copies {copies:.1f} + one "
              f"batch of masks {masks:.1f})")


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
