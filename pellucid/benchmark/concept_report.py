"""The concept section of the demo report: CRAFT (Fel et al., 2023) on the digits CNN of
:mod:`pellucid.zoo`, one class: its concepts' top crops ranked by Sobol importance, and how
faithful the concept bottleneck is on held-out images, and the concept-level fidelity of the
importances (C-Deletion, C-Insertion, C-muFidelity: pellucid's metrics on the concept masks)."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import plots, zoo
from ..explain import Craft
from ..metrics import Deletion, Insertion, MuFidelity
from .report import esc, figure_html, number


def concept_section(out_dir: str | Path, *, digit: int = 3, n_concepts: int = 5,
                    seed: int = 0) -> str:
    """HTML of the concept section; its figure is written under ``out_dir/figures``."""
    model, _ = zoo.get_model("digits_cnn")
    data = zoo.load_dataset("digits_cnn")
    train, test = data.x_train[data.y_train == digit], data.x_test[data.y_test == digit]
    # g = the CNN up to its last ReLU (non-negative activations, as NMF needs), h = the head
    craft = Craft(model, target_layer="relu2", n_concepts=n_concepts, patch_size=0.5,
                  crops_per_image=8, nb_design=32, seed=seed, progress=False)
    craft.fit(train, targets=digit)
    importances = craft.estimate_importance(test)
    fidelity = craft.concept_metrics(test)
    crops = plots.top_crops(train, craft.crop_boxes_, craft.crop_size_, craft.crops_u_, k=6)
    order = torch.argsort(importances, descending=True)
    gallery = plots.concept_gallery([crops[i] for i in order], importances[order])
    rows = "".join(f"<tr><td>{esc(name.replace('_', ' '))}</td><td>{number(value)}</td></tr>"
                   for name, value in fidelity.items())
    masks_model, masks, kwargs = craft.concept_space(test)
    metrics = {"C-Deletion ↓": Deletion(masks_model, baseline=0.0, progress=False),
               "C-Insertion ↑": Insertion(masks_model, baseline=0.0, progress=False),
               "C-µFidelity ↑": MuFidelity(masks_model, subset_fraction=0.5, nb_samples=64,
                                           seed=seed, progress=False)}
    scores = {name: metric(masks, craft.sample_importances_, digit, forward_kwargs=kwargs).mean
              for name, metric in metrics.items()}
    concept_rows = "".join(f"<tr><td>{esc(name)}</td><td>{number(value)}</td></tr>"
                           for name, value in scores.items())
    return "\n".join([
        f"<h2>Concepts: digit {digit} on digits</h2>",
        f"<p>CRAFT factorizes the CNN's last activations (layer <code>relu2</code>) on crops of "
        f"{len(train)} training images of digit {digit} into {n_concepts} non-negative concepts "
        f"(NMF), ranked by their total Sobol index on {len(test)} held-out images. Each row "
        "shows the crops that activate a concept most.</p>",
        figure_html(gallery, Path(out_dir), f"concepts-digit{digit}.png",
                    "Concepts, most important first: top crops and Sobol importance."),
        "<table><thead><tr><th>concept bottleneck on held-out images</th><th>value</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>",
        "<p>The Sobol importances scored as a heatmap over the concepts (Fel et al., 2023): "
        "concepts removed from every position of the held-out images, most important first "
        "(C-Deletion) or put back (C-Insertion), and the correlation of importances with the "
        "drop of random subsets (C-µFidelity).</p>",
        "<table><thead><tr><th>concept importance fidelity</th><th>value</th></tr>"
        f"</thead><tbody>{concept_rows}</tbody></table>",
    ])
