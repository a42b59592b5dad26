"""Every metric family on a few methods: faithfulness, robustness, randomization and complexity
on the digits CNN, localization on BlockMNIST (the label lives in one block), and agreement with
the true attributions of the suppressor task (gradients weigh the suppressor x2; the truth does
not). Models come from the zoo (trained in seconds on first use, then cached).

Run: python examples/metrics_tour.py
"""
import pandas as pd

from pellucid import zoo
from pellucid.explain import GradientInput, IntegratedGradients, Occlusion, Saliency
from pellucid.metrics import (AverageDrop, Complexity, FeatureAgreement, Infidelity,
                              LocalizationAUC, LocalLipschitz, Monotonicity, RandomLogit,
                              RankCorrelation, RelevanceMass, SensitivityMax, Sparseness,
                              SuppressorMass, TopKIntersection)

METHODS = {"Saliency": (Saliency, {}), "IntegratedGradients": (IntegratedGradients, {"steps": 16}),
           "Occlusion": (Occlusion, {"patch_size": 4, "stride": 4})}


def score(model, x, masks, methods, metrics):
    """A (method x metric) table of means; every metric gets the method for re-explaining."""
    rows = {}
    for name, (method, params) in methods.items():
        params = {"progress": False, **params}
        heatmaps = method(model, **params)(x)
        rows[name] = {label: make(method, params)(x, heatmaps, masks=masks).mean
                      for label, make in metrics.items()}
    return pd.DataFrame(rows).T.round(3)


def images_table():
    model, _ = zoo.get_model("digits_cnn")
    x = zoo.load_dataset("digits_cnn").x_test[:16]
    common = {"progress": False}
    metrics = {
        "infidelity (lower)": lambda m, p: Infidelity(model, nb_samples=32, **common),
        "average drop (lower)": lambda m, p: AverageDrop(model, **common),
        "monotonicity": lambda m, p: Monotonicity(model, **common),
        "sensitivity max (lower)": lambda m, p: SensitivityMax(
            model, m, explainer_kwargs=p, nb_samples=4, **common),
        "local Lipschitz (lower)": lambda m, p: LocalLipschitz(
            model, m, explainer_kwargs=p, nb_samples=4, **common),
        "random logit SSIM (lower)": lambda m, p: RandomLogit(model, m, explainer_kwargs=p,
                                                              **common),
        "sparseness": lambda m, p: Sparseness(),
        "complexity (lower)": lambda m, p: Complexity(),
    }
    return score(model, x, None, METHODS, metrics)


def localization_table():
    model, _ = zoo.get_model("blockmnist_cnn")
    data = zoo.load_dataset("blockmnist_cnn")
    x, masks = data.x_test[:16], data.masks_test[:16]
    metrics = {"ROC AUC": lambda m, p: LocalizationAUC(),
               "top-10% in block": lambda m, p: TopKIntersection(k=0.1),
               "relevance mass": lambda m, p: RelevanceMass()}
    return score(model, x, masks, METHODS, metrics)


def suppressor_table():
    model, _ = zoo.get_model("suppressor_linear")
    data = zoo.load_dataset("suppressor_linear")
    x, truth = data.x_test[:100], data.true_attributions_test[:100]
    methods = {"Saliency": (Saliency, {}), "GradientInput": (GradientInput, {}),
               "IntegratedGradients": (IntegratedGradients, {"steps": 16})}
    metrics = {"mass on x2 (lower)": lambda m, p: SuppressorMass(features=[1]),
               "rank correlation": lambda m, p: RankCorrelation(),
               "feature agreement k=1": lambda m, p: FeatureAgreement(k=1)}
    table = score(model, x, truth, methods, metrics)
    table.loc["true attribution"] = [metric(None, None)(x, truth, masks=truth).mean
                                     for metric in metrics.values()]
    return table


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", None)
    for title, make_table in [("digits: faithfulness, robustness, randomization, complexity",
                               images_table),
                              ("BlockMNIST: localization against the label's block",
                               localization_table),
                              ("suppressor task: agreement with the true attribution",
                               suppressor_table)]:
        print(f"\n{title}\n{make_table()}")
