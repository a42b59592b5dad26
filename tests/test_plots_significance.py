"""Significance plots: cliques of methods within the critical difference (hand-derived cases and
Demšar's 2006 example), the CD diagram and the p-value matrix (Figures, ax=, nothing left open,
saving, what is drawn)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from pellucid import plots
from pellucid.plots import cliques, critical_difference_diagram, significance_matrix

NAMES = ["IntegratedGradients", "SmoothGrad", "Random", "GradCAM", "Saliency", "DeepLIFT",
         "Occlusion", "RISE", "GradientXInput"]
RANKS = dict(zip(NAMES, [2.1, 2.6, 8.7, 3.4, 5.9, 4.2, 4.5, 6.3, 7.3]))
# Demšar (2006), Section 3.2.2: four C4.5 variants on 14 data sets
DEMSAR = {"C4.5": 3.143, "C4.5+m": 2.000, "C4.5+cf": 2.893, "C4.5+m+cf": 1.964}


@pytest.fixture(autouse=True)
def no_leaked_figures():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a plot function left a pyplot figure open"


def _p_values(k, seed=0):
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.uniform(1e-6, 1, (k, k)), 1)
    p = upper + upper.T
    np.fill_diagonal(p, 1.0)
    return p


def test_cliques_hand_made_examples():
    assert cliques({"A": 1.0, "B": 1.5, "C": 2.9, "D": 3.1}, 1.0) == [("A", "B"), ("C", "D")]
    # a chain: A~B and B~C but A and C differ by 1.6 >= cd
    assert cliques({"C": 2.6, "A": 1.0, "B": 1.8}, 1.0) == [("A", "B"), ("B", "C")]
    assert cliques({"A": 1.0, "B": 1.5, "C": 1.9}, 1.0) == [("A", "B", "C")]
    assert cliques({"A": 1.0, "B": 2.0, "C": 3.0}, 0.5) == []
    assert cliques({"A": 1.0, "B": 2.0}, 1.0) == []          # "less than cd": equal is significant
    # no group contained in another: the ranks 1.0..1.4 form one group, not several
    assert cliques({"A": 1.0, "B": 1.2, "C": 1.4, "D": 3.0}, 1.0) == [("A", "B", "C")]


def test_cliques_demsar_example():
    # Sorted: C4.5+m+cf 1.964, C4.5+m 2.000, C4.5+cf 2.893, C4.5 3.143.
    # Nemenyi at alpha=0.05: CD = 2.569 * sqrt(4*5 / (6*14)) = 1.25. The largest difference,
    # C4.5 - C4.5+m+cf = 3.143 - 1.964 = 1.179 < 1.25, so no pair differs: one group of all four
    # (Demšar: "the data is not sufficient" to tell them apart at 0.05).
    assert cliques(DEMSAR, 1.25) == [("C4.5+m+cf", "C4.5+m", "C4.5+cf", "C4.5")]
    # At alpha=0.10: CD = 2.291 * sqrt(20/84) = 1.12. From C4.5+m+cf (1.964): C4.5+cf differs by
    # 0.929 < 1.12, C4.5 by 1.179 >= 1.12 -> {m+cf, m, cf}. From C4.5+m (2.000): C4.5 differs by
    # 1.143 >= 1.12 -> {m, cf}, inside the first. From C4.5+cf: C4.5 differs by 0.25 -> {cf, C4.5}.
    # So C4.5 is significantly worse than C4.5+m and C4.5+m+cf, as Demšar concludes.
    assert cliques(DEMSAR, 1.12) == [("C4.5+m+cf", "C4.5+m", "C4.5+cf"), ("C4.5+cf", "C4.5")]


def test_cliques_validation():
    with pytest.raises(ValueError, match="at least 2 methods"):
        cliques({"A": 1.0}, 1.0)
    with pytest.raises(ValueError, match="cd must be a positive"):
        cliques({"A": 1.0, "B": 2.0}, 0.0)
    with pytest.raises(ValueError, match="must be finite"):
        cliques({"A": 1.0, "B": float("nan")}, 1.0)
    with pytest.raises(TypeError, match="must be a mapping"):
        cliques([1.0, 2.0], 1.0)


def test_critical_difference_diagram_draws_names_cd_and_groups(tmp_path):
    figure = critical_difference_diagram(RANKS, 2.2, title="Deletion")
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    ax = figure.axes[0]
    texts = [text.get_text() for text in ax.texts]
    for name in NAMES:
        assert sum(name in text for text in texts) == 1
    assert "CD = 2.20" in texts
    assert ax.get_title() == "Deletion"
    # rank 1 on the left: the best method's label is left of the worst's
    best = next(t for t in ax.texts if "IntegratedGradients" in t.get_text())
    worst = next(t for t in ax.texts if "Random" in t.get_text())
    assert best.get_position()[0] < 1 < RANKS["Random"] < worst.get_position()[0]
    thick = [line for line in ax.lines if line.get_linewidth() > 3]
    assert len(thick) == len(cliques(RANKS, 2.2)) == 5
    path = plots.save_figure(figure, tmp_path / "cd.png")
    assert path.stat().st_size > 0


def test_critical_difference_diagram_on_given_axes():
    figure = Figure()
    ax = figure.add_subplot(2, 1, 2)
    assert critical_difference_diagram(DEMSAR, 1.25, ax=ax) is figure
    assert len(figure.axes) == 1 and any("CD = 1.25" == t.get_text() for t in ax.texts)
    assert sum(line.get_linewidth() > 3 for line in ax.lines) == 1
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        critical_difference_diagram(DEMSAR, 1.25, ax="left")


def test_significance_matrix_annotates_every_off_diagonal_cell(tmp_path):
    k = len(NAMES)
    p = _p_values(k)
    p[0, 1] = p[1, 0] = 0.01
    p[0, 2] = p[2, 0] = 0.3
    figure = significance_matrix(NAMES, p, title="Holm")
    assert isinstance(figure, Figure) and len(figure.axes) == 2    # the colorbar
    ax = figure.axes[0]
    assert len(ax.texts) == k * (k - 1)
    cells = {tuple(np.round(t.get_position()).astype(int)): t.get_text() for t in ax.texts}
    assert not any(i == j for j, i in cells)                        # diagonal blank
    assert cells[(1, 0)] == "0.01*" and cells[(2, 0)] == "0.3"      # (column, row)
    shown = ax.images[0].get_array()
    assert np.ma.getmaskarray(shown).diagonal().all()
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert ax.get_xticklabels()[0].get_rotation() == 45
    assert ax.get_title() == "Holm"
    path = plots.save_figure(figure, tmp_path / "matrix.png")
    assert path.stat().st_size > 0


def test_significance_matrix_on_given_axes_mirrors_one_triangle_and_validates():
    p = np.full((3, 3), np.nan)
    p[0, 1], p[0, 2], p[1, 2] = 0.04, 0.5, 1e-7
    figure = Figure()
    ax = figure.add_subplot()
    assert significance_matrix(["A", "B", "C"], p, alpha=0.01, ax=ax) is figure
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["0.04", "0.04", "0.5", "0.5", "1e-07*", "1e-07*"])
    with pytest.raises(ValueError, match=r"must be \(k, k\)"):
        significance_matrix(["A", "B"], np.ones((3, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        significance_matrix(["A", "B"], [[1.0, 0.1], [0.2, 1.0]])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        significance_matrix(["A", "B"], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="alpha"):
        significance_matrix(["A", "B"], np.eye(2), alpha=0)
