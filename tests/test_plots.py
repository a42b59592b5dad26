"""Plots: Figures returned, what is drawn (shapes, titles, legends, values), nothing left open,
saving by extension."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pellucid import plots  # noqa: E402
from pellucid.metrics import MetricResult  # noqa: E402


@pytest.fixture(autouse=True)
def no_leaked_figures():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a plot function left a pyplot figure open"


@pytest.fixture
def images():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_overlay_signed_map_uses_diverging_colormap_centred_at_zero(images):
    heatmap = torch.linspace(-1, 3, 256).view(16, 16)
    figure = plots.overlay(images[0], heatmap, title="cat")
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    picture, layer = ax.images
    assert picture.get_array().shape == (16, 16, 3) and layer.get_array().shape == (16, 16)
    assert layer.get_cmap().name == "bwr" and layer.get_clim() == (-3.0, 3.0)
    assert ax.get_title() == "cat" and len(figure.axes) == 2  # the colorbar


def test_overlay_non_negative_grey_image_and_coarse_map(images):
    grey = images[0, :1]
    figure = plots.overlay(grey, torch.rand(4, 4), colorbar=False)
    picture, layer = figure.axes[0].images
    assert picture.get_array().shape == (16, 16)          # (1, H, W) shown as grey (H, W)
    assert layer.get_array().shape == (16, 16)            # 4x4 map resized to the image
    assert layer.get_cmap().name == "jet" and layer.get_clim()[0] >= 0
    assert len(figure.axes) == 1


def test_overlay_draws_on_given_axes(images):
    figure = Figure()
    ax = figure.add_subplot()
    assert plots.overlay(images[0], torch.rand(16, 16), ax=ax, colorbar=False) is figure
    assert len(ax.images) == 2
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        plots.overlay(images[0], torch.rand(16, 16), ax="left")
    with pytest.raises(ValueError, match=r"heatmap must be \(H, W\)"):
        plots.overlay(images[0], torch.rand(2, 16, 16))


def test_method_grid_layout_titles_and_shapes(images):
    maps = {"Saliency": torch.rand(3, 16, 16), "Occlusion": torch.randn(3, 16, 16)}
    figure = plots.method_grid(images, maps, titles=["a", "b", "c"])
    axes = np.array(figure.axes).reshape(3, 3)
    assert [ax.get_title() for ax in axes[0]] == ["image", "Saliency", "Occlusion"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b", "c"]
    assert all(len(ax.images) == 1 for ax in axes[:, 0])
    assert all(len(ax.images) == 2 for ax in axes[:, 1:].ravel())
    assert axes[1, 2].images[1].get_cmap().name == "bwr"
    assert axes[1, 1].images[1].get_cmap().name == "jet"
    np.testing.assert_allclose(axes[2, 1].images[1].get_array(), maps["Saliency"][2].numpy(),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="heatmaps of 'bad' must be .N, H, W. with N = 3"):
        plots.method_grid(images, {"bad": torch.rand(2, 16, 16)})


def curve_result(curves, name="deletion"):
    curves = np.asarray(curves, dtype=float)
    return MetricResult(name, scores=np.zeros(len(curves)), curves=curves,
                        fractions=np.linspace(0, 1, curves.shape[1]))


def test_plot_curves_mean_curves_and_auc_in_legend():
    falling = curve_result([[1.0, 0.5, 0.0], [1.0, 0.5, 0.0]])     # area 0.5
    flat = curve_result([[0.2, 0.2, 0.2], [0.4, 0.4, 0.4]])        # mean 0.3, area 0.3
    figure = plots.plot_curves({"A": falling, "B": flat})
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A (AUC=0.500)",
                                                                   "B (AUC=0.300)"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.3, 0.3, 0.3])
    assert ax.get_title() == "deletion" and "deleted" in ax.get_xlabel()
    assert not ax.collections
    band = plots.plot_curves({"B": flat}, show_spread=True).axes[0].collections[0]
    np.testing.assert_allclose(np.sort(np.unique(band.get_paths()[0].vertices[:, 1])), [0.2, 0.4])
    with pytest.raises(ValueError, match=r"results\['C'\] \(pointing_game\) has no curves"):
        plots.plot_curves({"C": MetricResult("pointing_game", scores=np.ones(2))})


def test_plot_roar_error_bars_from_details_or_repeats():
    fractions = np.array([0.0, 0.5, 0.9])
    with_details = MetricResult("roar", scores=np.zeros(2), curves=np.ones((2, 3)),
                                fractions=fractions, details={
                                    "accuracy_mean": np.array([0.9, 0.6, 0.3]),
                                    "accuracy_std": np.array([0.01, 0.05, 0.1]),
                                    "random_accuracy_mean": np.array([0.9, 0.8, 0.7]),
                                    "random_accuracy_std": np.zeros(3)})
    only_curves = MetricResult("roar", scores=np.zeros(2), fractions=fractions,
                               curves=np.array([[0.9, 0.7, 0.5], [0.7, 0.5, 0.3]]))
    figure = plots.plot_roar({"VarGrad": with_details, "Saliency": only_curves})
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["VarGrad", "random ranking", "Saliency"]
    np.testing.assert_allclose(ax.containers[0].lines[0].get_ydata(), [0.9, 0.6, 0.3])
    np.testing.assert_allclose(ax.containers[2].lines[0].get_ydata(), [0.8, 0.6, 0.4])  # repeats
    assert ax.get_xlabel() == "fraction of features removed"
    kar = MetricResult("kar", scores=np.zeros(1), curves=np.ones((1, 3)), fractions=fractions)
    assert plots.plot_roar({"x": kar}).axes[0].get_xlabel() == "fraction of features kept"


def test_top_crops_and_concept_gallery():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    boxes = [[0, 0, 0], [1, 2, 2], [0, 3, 1]]
    coefficients = [[0.1, 0.9], [0.8, 0.0], [0.5, 0.2]]
    crops = plots.top_crops(images, boxes, 3, coefficients, k=2)
    assert len(crops) == 2 and crops[0].shape == (2, 1, 3, 3)
    assert torch.equal(crops[0][0], images[1, :, 2:5, 2:5])  # concept 0: box 1 then box 2
    assert torch.equal(crops[0][1], images[0, :, 3:6, 1:4])
    assert torch.equal(crops[1][0], images[0, :, 0:3, 0:3])

    figure = plots.concept_gallery([torch.rand(4, 3, 8, 8), torch.rand(2, 3, 8, 8)], [0.2, 0.7],
                                   concept_names=["stripes", "eyes"])
    bars = figure.axes[0]
    assert [p.get_width() for p in bars.patches] == pytest.approx([0.7, 0.2])  # sorted
    assert [t.get_text() for t in bars.get_yticklabels()] == ["eyes", "stripes"]
    crop_axes = figure.axes[1:]
    assert len(crop_axes) == 2 * 4
    assert sum(len(ax.images) for ax in crop_axes) == 6
    assert crop_axes[0].images[0].get_array().shape == (8, 8, 3)
    with pytest.raises(ValueError, match="one importance per concept"):
        plots.concept_gallery([torch.rand(1, 3, 4, 4)], [0.1, 0.2])


def test_tabular_bars_single_and_global():
    values = np.array([0.1, -2.0, 0.5, 1.0])
    figure = plots.tabular_bars(values, ["a", "b", "c", "d"], top_k=3, title="why")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "d", "c"]
    assert [p.get_width() for p in ax.patches] == pytest.approx([-2.0, 1.0, 0.5])
    assert ax.patches[0].get_facecolor() != ax.patches[1].get_facecolor()  # sign colours
    assert ax.get_title() == "why"
    many = np.array([[1.0, -3.0], [-1.0, 1.0]])
    ax = plots.tabular_bars(many, top_k=None).axes[0]
    assert [p.get_width() for p in ax.patches] == pytest.approx([2.0, 1.0])  # mean |a|
    assert [t.get_text() for t in ax.get_yticklabels()] == ["feature 1", "feature 0"]
    with pytest.raises(ValueError, match="one name per feature .4., got 2"):
        plots.tabular_bars(values, ["a", "b"])


def test_waterfall_wraps_shap_without_leaking():
    figure = plots.waterfall(np.array([0.5, -0.25, 1.0]), ["age", "income", "debt"],
                             base_value=0.2, feature_values=[30.0, 1.5, 2.0], title="loan")
    assert isinstance(figure, Figure)
    texts = " ".join(t.get_text() for ax in figure.axes for t in ax.get_yticklabels())
    assert all(name in texts for name in ("age", "income", "debt"))
    assert figure.axes[0].get_title() == "loan"
    with pytest.raises(ValueError, match=r"attributions must be \(F,\)"):
        plots.waterfall(np.ones((2, 3)))


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"),
                                           (".svg", b"<?xml")])
def test_save_figure_by_extension(tmp_path, images, suffix, magic):
    figure = plots.overlay(images[0], torch.rand(16, 16))
    path = plots.save_figure(figure, tmp_path / "sub" / f"overlay{suffix}")
    assert path.read_bytes().startswith(magic)


def test_save_figure_rejects_unknown_extension(tmp_path, images):
    with pytest.raises(ValueError, match="must end with one of"):
        plots.save_figure(plots.overlay(images[0], torch.rand(16, 16)), tmp_path / "x.jpg")
