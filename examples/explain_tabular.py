"""Explain one tabular prediction of a scikit-learn model with Occlusion.

    python examples/explain_tabular.py --out figures/

A logistic regression on the breast cancer data (standardized, so the baseline 0 is the
training mean). Occluding one feature at a time on the model's log-odds gives, for a linear
model, exactly w_i * x_i (for the predicted class's log-odds): the bars add up to
f(x) - f(baseline), which the script checks.
"""
import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from pellucid import datasets, plots
from pellucid.explain import Occlusion


def main(out: Path) -> None:
    data = datasets.load_breast_cancer()
    classifier = LogisticRegression(max_iter=1000).fit(data.x_train.numpy(), data.y_train.numpy())
    print(f"logistic regression: test accuracy "
          f"{classifier.score(data.x_test.numpy(), data.y_test.numpy()):.3f}")

    def log_odds(x: np.ndarray) -> np.ndarray:     # any numpy -> numpy callable is a model
        d = classifier.decision_function(x)        # log-odds of class 1 against class 0
        return np.stack([-d, d], axis=1)           # column k: log-odds of class k

    sample = data.x_test[:1]                       # one patient, 30 features
    predicted = int(classifier.predict(sample.numpy())[0])
    explainer = Occlusion(log_odds, patch_size=1, baseline=0.0, progress=False)
    attributions = explainer(sample, targets=predicted)[0]
    baseline = np.zeros((1, sample.shape[1]))
    base = float(log_odds(baseline)[0, predicted])
    gap = log_odds(sample.numpy())[0, predicted] - base
    print(f"sum of attributions {attributions.sum():.4f} = f(x) - f(baseline) {gap:.4f}")

    name = data.class_names[predicted]
    figure = plots.tabular_bars(attributions, data.feature_names, top_k=10,
                                title=f"why the model says {name!r} (log-odds)")
    print("saved", plots.save_figure(figure, out / "tabular_bars.png"))

    figure = plots.waterfall(attributions, data.feature_names, base_value=base,
                             feature_values=sample[0], max_display=10)
    print("saved", plots.save_figure(figure, out / "tabular_waterfall.png"))

    everyone = explainer(data.x_test)              # (N, 30), predicted classes: a global view
    figure = plots.tabular_bars(everyone, data.feature_names, top_k=10,
                                title="mean |attribution| over the test set")
    print("saved", plots.save_figure(figure, out / "tabular_global.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"),
                        help="folder for the PNG files (default: ./pellucid_output)")
    main(parser.parse_args().out)
