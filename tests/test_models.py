"""Model adapters: torch, scikit-learn and callables give the same scores for the same function."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import LinearSVC

from pellucid.models import as_model


@pytest.fixture
def linear_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(int)
    return x, y


def test_torch_logits_and_probabilities():
    module = torch.nn.Linear(4, 3).eval()
    x = torch.randn(5, 4)
    model = as_model(module)
    expected = module(x).detach()
    torch.testing.assert_close(model.predict(x), expected)
    torch.testing.assert_close(model.predict(x, probabilities=True), torch.softmax(expected, 1))


def test_torch_declared_probabilities_are_not_softmaxed_twice():
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)).eval()
    x = torch.randn(5, 4)
    probs = as_model(module, outputs="probabilities").predict(x, probabilities=True)
    torch.testing.assert_close(probs, module(x).detach())


def test_predict_returns_normal_tensor_usable_in_autograd():
    out = as_model(torch.nn.Linear(4, 2).eval()).predict(torch.randn(3, 4))
    assert not out.is_inference()
    (out * torch.ones(3, 2, requires_grad=True)).sum().backward()


def test_sklearn_predict_proba(linear_problem):
    x, y = linear_problem
    clf = LogisticRegression().fit(x, y)
    scores = as_model(clf).predict(torch.from_numpy(x[:7]), probabilities=True)
    np.testing.assert_allclose(scores.numpy(), clf.predict_proba(x[:7]), rtol=1e-5)


def test_sklearn_binary_decision_function_softmax_is_sigmoid(linear_problem):
    x, y = linear_problem
    svm = LinearSVC().fit(x, y)
    d = svm.decision_function(x[:7])
    probs = as_model(svm).predict(torch.from_numpy(x[:7]), probabilities=True)
    np.testing.assert_allclose(probs[:, 1].numpy(), 1 / (1 + np.exp(-d)), rtol=1e-5)


def test_sklearn_regressor_is_one_output(linear_problem):
    x, _ = linear_problem
    reg = LinearRegression().fit(x, x @ np.array([1.0, 2.0, 0.0, -1.0]))
    scores = as_model(reg).predict(torch.from_numpy(x[:3]))
    assert scores.shape == (3, 1)
    np.testing.assert_allclose(scores[:, 0].numpy(), reg.predict(x[:3]), rtol=1e-5)


def test_callable_one_dimensional_output_becomes_a_column():
    model = as_model(lambda a: a.sum(axis=1))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.predict(x), x.sum(1, keepdim=True))


def linear_module(weight, bias):
    module = torch.nn.Linear(weight.shape[1], weight.shape[0]).eval()
    with torch.no_grad():
        module.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        module.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return module


def test_sklearn_and_callables_give_the_scores_of_the_equivalent_torch_model():
    """Multinomial logistic regression (predict_proba) = softmax of the torch Linear with its
    coefficients; a multi-class LinearSVC (decision_function) = that Linear's logits, and its
    probabilities their softmax; a numpy callable = the torch module computing the same."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.argmax(x[:, :3] + 0.3 * rng.normal(size=(90, 3)), axis=1)
    inputs = torch.from_numpy(x[:9])
    clf = LogisticRegression().fit(x, y)
    logits = linear_module(clf.coef_, clf.intercept_)(inputs).detach()
    for probabilities in (False, True):  # already probabilities: never softmaxed again
        torch.testing.assert_close(as_model(clf).predict(inputs, probabilities=probabilities),
                                   torch.softmax(logits, 1), rtol=1e-5, atol=1e-6)
    svm = LinearSVC().fit(x, y)
    svm_logits = linear_module(svm.coef_, svm.intercept_)(inputs).detach()
    torch.testing.assert_close(as_model(svm).predict(inputs), svm_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(as_model(svm).predict(inputs, probabilities=True),
                               torch.softmax(svm_logits, 1), rtol=1e-5, atol=1e-6)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    module = linear_module(w, b)
    callable_model = as_model(lambda a: a @ w.T.astype(np.float32) + b.astype(np.float32))
    for probabilities in (False, True):
        torch.testing.assert_close(callable_model.predict(inputs, probabilities=probabilities),
                                   as_model(module).predict(inputs, probabilities=probabilities))


def test_unsupported_object_is_a_type_error():
    with pytest.raises(TypeError, match="torch.nn.Module, a scikit-learn estimator or a callable"):
        as_model(42)


def test_predict_does_not_change_training_mode():
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).train()
    with pytest.warns(UserWarning, match="training mode"):
        as_model(module).predict(torch.randn(2, 4))
    assert module.training


def test_callable_that_changes_its_argument_in_place_does_not_reach_the_inputs():
    def normalizing_in_place(a):
        a -= a.mean(axis=1, keepdims=True)
        return a[:, :2]

    x = torch.arange(6.0).reshape(2, 3)
    as_model(normalizing_in_place).predict(x)
    torch.testing.assert_close(x, torch.arange(6.0).reshape(2, 3))
