"""Explain a breast cancer prediction over groups of correlated features.

    python examples/explain_tabular_groups.py --out figures/

The 30 features of the breast cancer data are 10 measurements of the cell nuclei (radius,
texture, ...), each given three times: its mean, its standard error and its worst value. The
three versions of a measurement are strongly correlated, so removing one alone says little;
here each measurement is one group (``features.column_groups`` by column name), and a random
forest's probability of the predicted class is explained over the 10 groups by KernelShap
(every one of the 2^10 - 2 coalitions: the exact Shapley values), ShapleyValueSampling,
FeatureAblation and Lime. The baseline is 0, the training mean (the data are standardized).
The script prints the values side by side and checks efficiency: the Shapley values add up to
f(x) - f(baseline).
"""
import argparse
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from pellucid import datasets, features, plots
from pellucid.explain import FeatureAblation, KernelShap, Lime, ShapleyValueSampling


def main(out: Path) -> None:
    data = datasets.load_breast_cancer()
    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(
        data.x_train.numpy(), data.y_train.numpy())
    print(f"random forest: test accuracy "
          f"{forest.score(data.x_test.numpy(), data.y_test.numpy()):.3f}")

    measurements = [name[len("mean "):] for name in data.feature_names[:10]]
    groups = {m: [f"mean {m}", f"{m} error", f"worst {m}"] for m in measurements}
    mask = features.column_groups(groups, data.feature_names)   # (30,) labels 0..9

    sample = data.x_test[:1]
    predicted = int(forest.predict(sample.numpy())[0])
    common = {"feature_mask": mask, "baseline": 0.0, "progress": False}
    explainers = {
        "KernelShap": KernelShap(forest, nb_samples=1022, **common),
        "ShapleyValueSampling": ShapleyValueSampling(forest, nb_samples=40, seed=0, **common),
        "FeatureAblation": FeatureAblation(forest, **common),
        "Lime": Lime(forest, nb_samples=1000, seed=0, **common),
    }
    results = {name: e.explain_groups(sample, predicted) for name, e in explainers.items()}

    print(f"\nP({data.class_names[predicted]}) explained over {len(groups)} groups")
    print(f"{'group':22s}" + "".join(f"{name:>22s}" for name in results))
    for g, measurement in enumerate(measurements):
        row = "".join(f"{r.values[0, g].item():22.4f}" for r in results.values())
        print(f"{measurement:22s}{row}")
    shapley, sampled = results["KernelShap"], results["ShapleyValueSampling"]
    print(f"\nKernelShap: sum {shapley.values.sum():.4f} = f(x) - f(baseline) "
          f"{(shapley.prediction - shapley.base_value).item():.4f}")
    print(f"ShapleyValueSampling: sum {sampled.values.sum():.4f}; largest standard error "
          f"{sampled.standard_error.max():.4f}; largest gap to the exact values "
          f"{(sampled.values - shapley.values).abs().max():.4f}")
    print(f"Lime surrogate R^2 on its samples: {results['Lime'].r2.item():.3f}")
    assert np.isclose(shapley.values.sum().item(),
                      (shapley.prediction - shapley.base_value).item(), atol=1e-5)

    title = f"Shapley values of the groups, P({data.class_names[predicted]})"
    figure = plots.tabular_bars(shapley.values[0], measurements, title=title)
    print("saved", plots.save_figure(figure, out / "tabular_groups.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"),
                        help="folder for the PNG files (default: ./pellucid_output)")
    main(parser.parse_args().out)
