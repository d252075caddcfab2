"""compat: the classic API's semantics, replayed as the scenarios existing code relies on.

Names and reprs; template methods and direct update* calls; attribute replacement and live
parameters; gradient accumulation; BatchNormalization's lazy statistics and EPS; global-RNG
initialisation and Dropout. A user's Module inside Sequential, Sequential's container
protocol and failed calls: test_compat_errors.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from compat_kit import assert_same, rand, sequential

import compat
import fnn
from compat import (
    ELU,
    BatchNormalization,
    ChannelwiseScaling,
    ClassNLLCriterion,
    ClassNLLCriterionUnstable,
    Conv2d,
    Criterion,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    LogSoftMax,
    MaxPool2d,
    Module,
    MSECriterion,
    ReLU,
    SoftMax,
    SoftPlus,
)

NAMES = ["Module", "Sequential", "Criterion", "Linear", "SoftMax", "LogSoftMax",
         "BatchNormalization", "ChannelwiseScaling", "Dropout", "ReLU", "LeakyReLU", "ELU",
         "SoftPlus", "Conv2d", "MaxPool2d", "Flatten", "MSECriterion",
         "ClassNLLCriterionUnstable", "ClassNLLCriterion", "sgd_momentum", "adam_optimizer"]


# --- names and reprs ---------------------------------------------------------------------------

def test_star_import_gives_every_classic_name():
    namespace: dict = {}
    exec("from compat import *", namespace)
    assert set(NAMES) <= set(namespace)
    assert sorted(compat.__all__) == sorted(NAMES)


def test_reprs_are_the_classic_ones():
    np.random.seed(0)
    cases = {
        "Linear 3 -> 4": Linear(3, 4), "SoftMax": SoftMax(), "LogSoftMax": LogSoftMax(),
        "BatchNormalization": BatchNormalization(0.5), "ChannelwiseScaling": ChannelwiseScaling(4),
        "Dropout(p=0.5)": Dropout(), "Dropout(p=0.2)": Dropout(0.2), "ReLU": ReLU(),
        "LeakyReLU(slope=0.03)": LeakyReLU(), "ELU(alpha=1.0)": ELU(), "SoftPlus": SoftPlus(),
        "Conv2d 3 -> 8": Conv2d(3, 8, 3), "MaxPool2d, kern 2, stride 2": MaxPool2d(2),
        "Flatten": Flatten(), "Module": Module(), "Criterion": Criterion(),
        "MSECriterion": MSECriterion(), "ClassNLLCriterion": ClassNLLCriterion(),
        "ClassNLLCriterionUnstable": ClassNLLCriterionUnstable(),
    }
    for text, module in cases.items():
        assert repr(module) == text
    assert repr(sequential(Linear(3, 4), ReLU(), Dropout(0.1))) == \
        "Linear 3 -> 4\nReLU\nDropout(p=0.1)\n"


def test_repr_follows_assigned_attributes():
    layer, act = Linear(3, 4), LeakyReLU()
    layer.W, layer.b = np.zeros((7, 5)), np.zeros(7)
    act.slope = 0.2
    assert (repr(layer), repr(act)) == ("Linear 5 -> 7", "LeakyReLU(slope=0.2)")


# --- template methods ------------------------------------------------------------------------

def test_backward_equals_update_calls_in_order():
    x, dy = rand(5, 3), rand(5, 4, seed=1)
    np.random.seed(0)
    a = Linear(3, 4)
    np.random.seed(0)
    b = Linear(3, 4)
    assert a.forward(x) is a.output
    assert a.backward(x, dy) is a.gradInput
    b.updateOutput(x)
    b.updateGradInput(x, dy)
    b.accGradParameters(x, dy)
    assert_same([a.output, a.gradInput, a.gradW, a.gradb],
                [b.output, b.gradInput, b.gradW, b.gradb])


def test_backward_runs_the_fnn_backward_once(monkeypatch):
    calls = []
    original = fnn.Linear.backward

    def counting(self, params, cache, dy):
        calls.append(1)
        return original(self, params, cache, dy)

    monkeypatch.setattr(fnn.Linear, "backward", counting)
    x, dy = rand(5, 3), rand(5, 4, seed=1)
    layer = Linear(3, 4)
    layer.forward(x)
    layer.backward(x, dy)
    assert len(calls) == 1
    layer.updateGradInput(x, dy)
    layer.accGradParameters(x, dy)  # same objects right after: reused
    assert len(calls) == 2
    gradW = layer.gradW.copy()
    layer.accGradParameters(x, dy.copy())  # other arrays: computed again, still right
    assert len(calls) == 3
    np.testing.assert_array_equal(layer.gradW, gradW + dy.T @ x)


def test_direct_calls_with_another_input_are_computed_from_it():
    x, other, dy = rand(5, 3), rand(5, 3, seed=2), rand(5, 4, seed=1)
    layer = Linear(3, 4)
    layer.forward(x)
    layer.accGradParameters(other, dy)  # a different input than the forward's
    np.testing.assert_allclose(layer.gradW, dy.T @ other, rtol=1e-14)
    act = ReLU()
    act.forward(x)
    np.testing.assert_array_equal(act.updateGradInput(other, dy[:, :3]),
                                  np.where(other > 0, dy[:, :3], 0))


def test_user_criterion_and_module_defaults():
    m, c = Module(), Criterion()
    assert (m.output, m.gradInput, m.training) == (None, None, True)
    assert m.getParameters() == [] and m.getGradParameters() == []
    m.evaluate()
    assert m.training is False
    m.train()
    assert m.training is True
    assert (c.output, c.gradInput) == (None, None)


# --- parameters: live arrays, replacement, accumulation --------------------------------------

def test_get_parameters_returns_the_live_arrays():
    lin, cs = Linear(3, 4), ChannelwiseScaling(4)
    assert lin.getParameters()[0] is lin.W and lin.getParameters()[1] is lin.b
    assert lin.getGradParameters()[0] is lin.gradW and lin.getGradParameters()[1] is lin.gradb
    assert cs.getParameters() == [cs.gamma, cs.beta]
    assert cs.getGradParameters()[0] is cs.gradGamma and cs.getGradParameters()[1] is cs.gradBeta
    net = sequential(lin, ReLU(), cs)
    params, grads = net.getParameters(), net.getGradParameters()
    assert len(params) == 3 and params[1] == [] and grads[1] == []
    assert params[0][0] is lin.W and params[2][1] is cs.beta
    assert grads[2][0] is cs.gradGamma and grads[2][1] is cs.gradBeta


def test_in_place_update_of_parameters_changes_the_next_forward():
    x = rand(5, 3)
    layer = Linear(3, 4)
    y0 = layer.forward(x).copy()
    for p in layer.getParameters():
        p -= 1.0
    np.testing.assert_allclose(layer.forward(x), y0 - x.sum(axis=1, keepdims=True) - 1.0,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_assigned_parameters_of_any_float_dtype_are_used(dtype):
    x = rand(5, 3, dtype=dtype)
    layer = Linear(3, 4)
    W, b = rand(4, 3, seed=3, dtype=np.float32), rand(4, seed=4, dtype=np.float32)
    layer.W, layer.b = W, b
    y = layer.forward(x)
    ref, _ = fnn.Linear(3, 4).forward(fnn.linear.LinearParams(W=W, b=b), (), x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ref)


def test_parameters_sharing_memory_with_another_array_follow_it():
    x = rand(5, 3)
    storage = rand(4 * 3 + 4, seed=3)  # e.g. another library's flat parameter buffer
    layer = Linear(3, 4)
    layer.W, layer.b = storage[:12].reshape(4, 3), storage[12:]
    y0 = layer.forward(x).copy()
    storage *= 2
    np.testing.assert_allclose(layer.forward(x), 2 * y0, rtol=1e-14)


def test_parameters_sharing_memory_with_torch_tensors():
    torch = pytest.importorskip("torch")
    ref = torch.nn.Linear(3, 4)
    layer = Linear(3, 4)
    layer.W, layer.b = ref.weight.detach().numpy(), ref.bias.detach().numpy()
    x = rand(5, 3, dtype=np.float32)
    with torch.no_grad():
        ref.weight.mul_(3)
        np.testing.assert_allclose(layer.forward(x), ref(torch.tensor(x)).numpy(), atol=1e-6)


def test_acc_grad_parameters_accumulates_and_zero_grad_resets_in_place():
    x, dy = rand(5, 3), rand(5, 4, seed=1)
    layer = Linear(3, 4)
    gradW, gradb = layer.gradW, layer.gradb
    layer.forward(x)
    layer.backward(x, dy)
    once = [gradW.copy(), gradb.copy()]
    layer.backward(x, dy)
    np.testing.assert_allclose(gradW, 2 * once[0], rtol=1e-15)
    np.testing.assert_allclose(gradb, 2 * once[1], rtol=1e-15)
    layer.zeroGradParameters()
    assert layer.gradW is gradW and layer.gradb is gradb
    assert not gradW.any() and not gradb.any()


@pytest.mark.parametrize("param_dtype, grad_dtype", [(np.float32, np.float64),
                                                     (np.float64, np.float32)])
def test_accumulation_when_dtypes_differ(param_dtype, grad_dtype):
    x, dy = rand(5, 3), rand(5, 4, seed=1)
    layer = Linear(3, 4)
    layer.W = layer.W.astype(param_dtype)
    layer.gradW = np.ones((4, 3), grad_dtype)
    gradW = layer.gradW
    layer.forward(x)
    layer.backward(x, dy)
    layer.backward(x, dy)
    assert layer.gradW is gradW and gradW.dtype == grad_dtype
    expected = (1 + 2 * (dy.T @ x).astype(param_dtype)).astype(grad_dtype)
    np.testing.assert_allclose(gradW, expected, rtol=1e-6)


def test_zero_grad_after_assigning_parameters_of_another_shape():
    layer = Linear(3, 4)
    layer.W, layer.b = rand(2, 5, seed=1), rand(2, seed=2)
    x, dy = rand(6, 5), rand(6, 2, seed=3)
    layer.forward(x)
    with pytest.raises(ValueError, match="gradW has shape"):
        layer.backward(x, dy)
    layer.zeroGradParameters()
    layer.backward(x, dy)
    np.testing.assert_allclose(layer.gradW, dy.T @ x, rtol=1e-14)


# --- BatchNormalization, criteria EPS --------------------------------------------------------

def test_batchnorm_statistics_are_created_on_the_first_forward():
    bn = BatchNormalization(alpha=0.25)
    assert bn.moving_mean is None and bn.moving_variance is None and bn.alpha == 0.25
    x = rand(8, 3) * 2 + 1
    y = bn.forward(x)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), rtol=1e-12)
    np.testing.assert_allclose(bn.moving_mean, 0.75 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(bn.moving_variance, 0.25 + 0.75 * x.var(0), rtol=1e-12)
    x2 = rand(8, 3, seed=1)
    old_mean, old_var = bn.moving_mean.copy(), bn.moving_variance.copy()
    bn.forward(x2)  # alpha weights the OLD statistic; biased batch variance
    np.testing.assert_allclose(bn.moving_mean, 0.25 * old_mean + 0.75 * x2.mean(0), rtol=1e-12)
    np.testing.assert_allclose(bn.moving_variance, 0.25 * old_var + 0.75 * x2.var(0),
                               rtol=1e-12)


def test_batchnorm_uses_assigned_statistics():
    bn = BatchNormalization()
    bn.moving_mean, bn.moving_variance = np.array([1.0, -1.0]), np.array([4.0, 0.5])
    bn.evaluate()
    x = rand(5, 2)
    np.testing.assert_allclose(bn.forward(x), (x - bn.moving_mean) / np.sqrt(bn.moving_variance
                                                                               + bn.EPS))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 2\), got shape \(5, 3\)"):
        bn.forward(rand(5, 3))


def test_eps_class_attributes():
    assert BatchNormalization.EPS == 1e-3 and BatchNormalization().EPS == 1e-3
    assert ClassNLLCriterionUnstable.EPS == 1e-15 and ClassNLLCriterionUnstable().EPS == 1e-15


def test_assigned_eps_is_used():
    x = rand(6, 2)
    bn = BatchNormalization()
    bn.EPS = 0.5
    np.testing.assert_allclose(bn.forward(x), (x - x.mean(0)) / np.sqrt(x.var(0) + 0.5))
    assert BatchNormalization.EPS == 1e-3
    crit = ClassNLLCriterionUnstable()
    crit.EPS = 1e-2
    p, t = np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])
    np.testing.assert_allclose(crit.forward(p, t), -np.log(1e-2))
    np.testing.assert_allclose(crit.backward(p, t), [[-100.0, 0.0]])


# --- randomness: initialisation and Dropout from the global RNG -------------------------------

def test_initialisation_draws_from_the_global_rng_in_the_classic_order():
    np.random.seed(3)
    lin, cs, conv, after = Linear(3, 4), ChannelwiseScaling(5), Conv2d(2, 3, 3), np.random.rand()
    np.random.seed(3)
    s = 1 / np.sqrt(3)
    expected = [np.random.uniform(-s, s, (4, 3)), np.random.uniform(-s, s, 4)]
    s = 1 / np.sqrt(5)
    expected += [np.random.uniform(-s, s, 5), np.random.uniform(-s, s, 5)]
    s = 1 / np.sqrt(2)
    expected += [np.random.uniform(-s, s, (3, 2, 3, 3)), np.random.uniform(-s, s, 3)]
    assert_same([lin.W, lin.b, cs.gamma, cs.beta, conv.W, conv.b], expected)
    assert np.random.rand() == after
    assert [a.dtype for a in (lin.gradW, cs.gradBeta, conv.gradb)] == [np.float64] * 3
    assert not (lin.gradW.any() or cs.gradGamma.any() or conv.gradW.any())


def test_dropout_masks_follow_np_random_seed():
    x = np.ones((50, 20))
    drop = Dropout(0.3)
    np.random.seed(1)
    y1, y2 = drop.forward(x).copy(), drop.forward(x).copy()
    np.random.seed(1)
    np.testing.assert_array_equal(drop.forward(x), y1)
    assert not np.array_equal(y1, y2)  # a new mask per call
    assert set(np.unique(y1)) == {0.0, 1 / 0.7}
    assert abs((y1 == 0).mean() - 0.3) < 0.05
    dy = rand(50, 20)
    np.testing.assert_array_equal(drop.backward(x, dy), dy * (y1 / x))  # the forward's mask


def test_dropout_evaluate_is_identity_and_draws_nothing():
    drop = Dropout(0.5)
    drop.evaluate()
    x = rand(4, 3)
    np.random.seed(2)
    np.testing.assert_array_equal(drop.forward(x), x)
    np.testing.assert_array_equal(drop.backward(x, 2 * x), 2 * x)
    after = np.random.rand()
    np.random.seed(2)
    assert np.random.rand() == after
