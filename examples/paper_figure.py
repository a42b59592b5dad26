"""A paper figure: method x image grid and deletion/insertion curves on BlockMNIST.

    python examples/paper_figure.py --out figures/

BlockMNIST (Shah et al., 2021) knows the truth: the label depends only on the digit block, so
the script also prints each method's pointing game (does the heatmap's maximum fall in the
digit block?) next to a random heatmap's. Figures are written as PDF (for the paper) and PNG.
"""
import argparse
from pathlib import Path

from matplotlib.figure import Figure

from pellucid import plots, zoo
from pellucid.benchmark import RandomAttribution
from pellucid.explain import IntegratedGradients, Occlusion, Rise, Saliency, SmoothGrad
from pellucid.metrics import Deletion, Insertion, PointingGame


def main(out: Path, n_images: int = 6) -> None:
    model, info = zoo.get_model("blockmnist_cnn")
    data = zoo.load_dataset("blockmnist_cnn")
    print(f"blockmnist_cnn: test accuracy {info['test_accuracy']:.3f}")
    images, masks = data.x_test[:n_images], data.masks_test[:n_images]
    targets = model(images).argmax(1)

    explainers = {
        "Saliency": Saliency(model, progress=False),
        "SmoothGrad": SmoothGrad(model, nb_samples=32, noise_level=0.2, progress=False),
        "Integrated Gradients": IntegratedGradients(model, steps=32, progress=False),
        "Occlusion": Occlusion(model, patch_size=4, stride=2, progress=False),
        "RISE": Rise(model, nb_samples=500, grid_size=4, progress=False),
        "random": RandomAttribution(model, progress=False),  # uniform noise: the chance level
    }
    heatmaps = {name: e(images, targets) for name, e in explainers.items()}

    pointing = PointingGame(tolerance=0)
    for name, maps in heatmaps.items():
        print(f"{name:>22}: pointing game {pointing(images, maps, masks=masks).mean:.2f}")

    labels = [f"digit {data.class_names[int(t)]}" for t in targets]
    grid = plots.method_grid(images, heatmaps, titles=labels, cell_size=1.4)
    for suffix in (".pdf", ".png"):
        print("saved", plots.save_figure(grid, out / f"blockmnist_grid{suffix}"))

    figure = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = figure.subplots(1, 2)
    for metric, ax in ((Deletion(model, progress=False), left),
                       (Insertion(model, baseline=0.0, progress=False), right)):
        results = {name: metric(images, maps, targets) for name, maps in heatmaps.items()}
        plots.plot_curves(results, ax=ax)
    for suffix in (".pdf", ".png"):
        print("saved", plots.save_figure(figure, out / f"blockmnist_curves{suffix}"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"),
                        help="folder for the figures (default: ./pellucid_output)")
    main(parser.parse_args().out)
