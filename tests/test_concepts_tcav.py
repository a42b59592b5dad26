"""TCAV (Kim et al., 2018) on a planted model.

Activations ``a = relu(conv1x1(x))`` (4 channels, 8x8). The class-0 logit is
``3 mean(a_0) + sum_j z_j^2`` with ``z = M a + b`` centred on random images: it depends on the
planted concept direction (channel 0, "red") and on input-dependent directions (the quadratic
term's gradient changes sign from input to input). Red images have a CAV along channel 0, whose
directional derivative is positive for every input: TCAV = 1, significant. A "concept" drawn
like the random images is a random direction: not significant in >= 90% of seeds."""
import threading

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression, SGDClassifier
from torch import nn

from pellucid.explain.concepts import Tcav


class Planted(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.mix = nn.Linear(256, 8)
        with torch.no_grad():
            eye = torch.eye(4, 3)[:, :, None, None]
            self.features[0].weight.copy_(eye + 0.1 * torch.randn(4, 3, 1, 1, generator=g))
            self.features[0].bias.zero_()
            self.mix.weight.copy_(torch.randn(8, 256, generator=g) / 16)
            a = self.features(torch.rand(2000, 3, 8, 8, generator=g)).flatten(1)
            self.mix.bias.copy_(-(a @ self.mix.weight.T).mean(0))

    def forward(self, x):
        a = self.features(x)
        logit = 3 * a[:, 0].mean((1, 2)) + self.mix(a.flatten(1)).pow(2).sum(1)
        return torch.stack([logit, -logit], 1)


def images(n, generator, red=0.0):
    x = torch.rand(n, 3, 8, 8, generator=generator)
    x[:, 0] += red
    return x


@pytest.fixture(scope="module")
def model():
    return Planted().eval()


def data(seed, red, n_inputs=40):
    g = torch.Generator().manual_seed(seed + 100)
    return images(n_inputs, g), images(40, g), images(15, g, red)


def test_planted_concept_scores_one_and_is_significant(model):
    x, pool, red = data(0, 1.0)
    _, _, noise = data(1, 0.0)
    tcav = Tcav(model, target_layer="features", n_runs=12, seed=0, progress=False)
    result = tcav(x, 0, concepts={"red": red, "noise": noise}, random_examples=pool)
    print("TCAV planted:", dict(zip(result.concepts, result.scores)), "p", result.p_values)
    assert result.concepts == ["red", "noise"]
    assert result.scores[0] >= 0.97 and result.significant[0] and result.p_values[0] < 0.05
    assert not result.significant[1]
    assert result.run_scores.shape == result.random_scores.shape == (2, 12)
    assert result.cavs.shape == (2, 12, 256)
    # the p-values written out: the mean concept score as one observation against the random
    # scores (Student's t, pooled variance = the random scores' variance), times 2 concepts
    for k in range(2):
        r = result.random_scores[k]
        t = (result.run_scores[k].mean() - r.mean()) / (r.std(ddof=1) * np.sqrt(1 + 1 / len(r)))
        p = 2 * stats.t.sf(abs(t), len(r) - 1)
        assert result.p_values[k] == pytest.approx(min(1.0, 2 * p), rel=1e-6)


def test_random_concept_is_not_significant_in_most_seeds(model):
    significant = 0
    for seed in range(20):
        x, pool, noise = data(seed, 0.0, n_inputs=30)
        tcav = Tcav(model, target_layer="features", n_runs=10, seed=seed, progress=False)
        significant += bool(tcav(x, 0, concepts={"noise": noise},
                                 random_examples=pool).significant[0])
    print("random concept significant in", significant, "of 20 seeds")
    assert significant <= 2


def test_scores_are_the_signs_of_the_directional_derivatives(model):
    """Against gradients written out by hand: d logit / d a for the planted formula."""
    x, pool, red = data(2, 0.5)
    result = Tcav(model, target_layer=model.features, n_runs=3, seed=0, batch_size=7,
                  progress=False)(x, 0, concepts={"red": red}, random_examples=pool)
    a = model.features(x).detach().flatten(1).requires_grad_(True)
    z = a @ model.mix.weight.T.detach() + model.mix.bias.detach()
    logit = 3 * a.view(-1, 4, 64)[:, 0].mean(1) + z.pow(2).sum(1)
    (grad,) = torch.autograd.grad(logit.sum(), a)
    expected = ((grad.numpy() @ result.cavs[0].T) > 0).mean(0)
    np.testing.assert_allclose(result.run_scores[0], expected)


def test_cav_is_the_unit_normal_of_the_classifier_toward_the_concept(model):
    x, pool, red = data(3, 1.0)
    tcav = Tcav(model, target_layer="features", n_runs=2, classifier=LogisticRegression(C=0.5),
                seed=0, progress=False)
    result = tcav(x, 0, concepts={"red": red}, random_examples=pool)
    concept, counter = tcav.activations(red).numpy(), tcav.activations(pool).numpy()
    order = np.random.default_rng((0, 0, len(red))).permutation(len(pool))  # run 0's draw
    features = np.concatenate([concept, counter[order[:len(red)]]])
    labels = np.r_[np.zeros(len(red)), np.ones(len(red))]      # concept = 0 here: sign flips
    coef = LogisticRegression(C=0.5).fit(features, labels).coef_[0]
    np.testing.assert_allclose(result.cavs[0, 0], -coef / np.linalg.norm(coef), atol=1e-4)
    assert result.cavs[0, 0][:64].mean() > 0                   # toward red: channel 0 up


@pytest.mark.parametrize("name, estimator", [
    ("logistic", LogisticRegression(max_iter=1000)),
    ("sgd", SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=0))])
def test_fits_in_the_span_of_the_examples_give_the_full_space_cavs(model, name, estimator):
    """The named (L2) classifiers are fitted on coordinates in the span of the examples; a
    user's estimator in the full activation space: the same CAVs (run 0 has random_state 0)."""
    x, pool, red = data(7, 1.0)
    options = dict(target_layer="features", n_runs=2, seed=0, progress=False)
    span = Tcav(model, classifier=name, **options)(x, 0, concepts={"red": red},
                                                  random_examples=pool)
    full = Tcav(model, classifier=estimator, **options)(x, 0, concepts={"red": red},
                                                        random_examples=pool)
    for k in range(2 if name == "logistic" else 1):  # lbfgs stops at tol=1e-4: ~1e-3
        cosine = span.cavs[0, k] @ full.cavs[0, k]
        assert cosine > 0.9999, cosine
    if name == "sgd":     # the same updates in exact arithmetic
        np.testing.assert_allclose(span.cavs[0, 0], full.cavs[0, 0], atol=2e-4)


def test_cavs_are_cached_in_memory_and_on_disk(model, tmp_path, monkeypatch):
    x, pool, red = data(4, 1.0)
    fits = []
    original = Tcav._fit_cav
    monkeypatch.setattr(Tcav, "_fit_cav", lambda self, *a: fits.append(1) or original(self, *a))
    tcav = Tcav(model, target_layer="features", n_runs=3, seed=0, cache_dir=tmp_path,
                progress=False)
    first = tcav(x, 0, concepts={"red": red}, random_examples=pool)
    files = sorted(tmp_path.glob("cav-*.npy"))
    assert len(fits) == 6 and len(files) == 6
    again = tcav(x[:10], 1, concepts={"red": red}, random_examples=pool)   # another class
    assert len(fits) == 6
    np.testing.assert_array_equal(again.cavs, first.cavs)
    fresh = Tcav(model, target_layer="features", n_runs=3, seed=0, cache_dir=tmp_path,
                 progress=False)
    np.testing.assert_array_equal(fresh(x, 0, concepts={"red": red},
                                        random_examples=pool).run_scores, first.run_scores)
    assert len(fits) == 6
    other = red.clone()
    other[0, 0, 0, 0] += 0.1                                   # other data, other CAVs
    tcav(x, 0, concepts={"blue": other}, random_examples=pool)
    assert len(fits) == 9                     # random CAVs are shared by concepts of one size
    files[0].write_bytes(b"not a numpy file")
    with pytest.warns(UserWarning, match="damaged CAV cache"):
        Tcav(model, target_layer="features", n_runs=3, seed=0, cache_dir=tmp_path,
             progress=False)(x, 0, concepts={"red": red}, random_examples=pool)


def test_threads_share_one_tcav_and_nothing_changes(model):
    x, pool, red = data(5, 1.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x_before = x.clone()
    tcav = Tcav(model, target_layer="features", n_runs=3, seed=0, progress=False)
    results = [None] * 4

    def run(i):
        results[i] = tcav(x, 0, concepts={"red": red}, random_examples=pool).run_scores

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert torch.equal(x, x_before)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_clear_errors(model):
    x, pool, red = data(6, 1.0)
    tcav = Tcav(model, target_layer="features", n_runs=3, progress=False)
    with pytest.raises(ValueError, match="random pool of >= 30"):
        tcav(x, 0, concepts={"red": red}, random_examples=pool[:20])
    with pytest.raises(ValueError, match="inputs' shape"):
        tcav(x, 0, concepts={"red": red[:, :2]}, random_examples=pool)
    with pytest.raises(ValueError, match="non-empty dict"):
        tcav(x, 0, concepts={}, random_examples=pool)
    with pytest.raises(ValueError, match="one target per input"):
        tcav(x, np.zeros((len(x), 2), dtype=int), concepts={"red": red}, random_examples=pool)
    with pytest.raises(ValueError, match="n_runs must be >= 2"):
        Tcav(model, target_layer="features", n_runs=1)
    with pytest.raises(ValueError, match="classifier"):
        Tcav(model, target_layer="features", classifier="svm")
    with pytest.raises(ValueError, match="dotted name"):
        Tcav(model, target_layer="nope")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Tcav(lambda v: v, target_layer="features")


def test_tcav_bars_draw_scores_and_significance_marks():
    from matplotlib.patches import Rectangle

    from pellucid.explain.concepts import TcavResult
    from pellucid.plots import tcav_bars
    runs = np.array([[0.9, 1.0, 0.95], [0.4, 0.6, 0.5]])
    result = TcavResult(["red", "noise"], runs.mean(1), runs, np.full((2, 3), 0.5),
                        np.array([0.001, 0.8]), np.array([True, False]), np.zeros((2, 3, 4)),
                        0.05)
    figure = tcav_bars(result)
    axes = figure.axes[0]
    heights = [p.get_height() for p in axes.patches if isinstance(p, Rectangle)]
    np.testing.assert_allclose(heights, runs.mean(1))
    labels = [t.get_text() for t in axes.texts]
    assert labels[0].startswith("* ") and not labels[1].startswith("*")
    assert [t.get_text() for t in axes.get_xticklabels()] == ["red", "noise"]
