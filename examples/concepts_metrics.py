"""Concept metrics (Fel et al., 2023, "A Holistic Approach ..."): C-Deletion, C-Insertion and
C-muFidelity of NMF and PCA concepts of the zoo's digits CNN, with CRAFT's Sobol importances.

The concept metrics are pellucid's Deletion, Insertion and MuFidelity applied to the
concept-mask model of ``Craft.concept_space`` (masks of ones, substrate 0 = the concept
removed everywhere in the image); the importances rank the concepts as a heatmap ranks pixels.

    python examples/concepts_metrics.py --digits 0 1 2 3 4 5 6 7 8 9

The benchmark runs the same metrics as cells, per image, with confidence intervals and paired
tests (concepts fitted on the explained test images of each class, not on training images):
``pellucid benchmark examples/concepts_benchmark.toml``.
"""
import argparse

import numpy as np

from pellucid import zoo
from pellucid.explain import Craft
from pellucid.metrics import Deletion, Insertion, MuFidelity


def concept_scores(model, train, test, digit, factorization, n_concepts):
    craft = Craft(model, target_layer="relu2", n_concepts=n_concepts,
                  factorization=factorization, crops_per_image=8, nb_design=32, progress=False)
    craft.fit(train, targets=digit)
    craft.estimate_importance(test)
    importances = craft.sample_importances_                      # (N, n_concepts)
    masks_model, masks, kwargs = craft.concept_space(test)
    metrics = {"C-Deletion": Deletion(masks_model, baseline=0.0, progress=False),
               "C-Insertion": Insertion(masks_model, baseline=0.0, progress=False),
               "C-muFidelity": MuFidelity(masks_model, subset_fraction=0.5, nb_samples=64,
                                          progress=False)}
    scores = {name: metric(masks, importances, digit, forward_kwargs=kwargs).mean
              for name, metric in metrics.items()}
    scores["fidelity"] = craft.concept_metrics(test)["fidelity"]
    return scores


def main(digits, n_concepts):
    model, _ = zoo.get_model("digits_cnn")
    data = zoo.load_dataset("digits_cnn")
    table = {"nmf": [], "pca": []}
    for digit in digits:
        train = data.x_train[data.y_train == digit]
        test = data.x_test[data.y_test == digit]
        for factorization in table:
            scores = concept_scores(model, train, test, digit, factorization, n_concepts)
            table[factorization].append(scores)
            print(f"digit {digit} {factorization}: " +
                  "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    for factorization, rows in table.items():
        means = {k: np.mean([row[k] for row in rows]) for k in rows[0]}
        print(f"mean over {len(digits)} digits, {factorization}: " +
              "  ".join(f"{k} {v:.3f}" for k, v in means.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, nargs="+", default=[0, 3, 8])
    parser.add_argument("--n-concepts", type=int, default=6)
    arguments = parser.parse_args()
    main(arguments.digits, arguments.n_concepts)
