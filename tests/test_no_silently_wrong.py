"""No silently wrong library results (issue 14, item 4): the validators in zerodl._validate and
numerical_gradient's dtype check.

The validators are called by Sequential (distinct layers, accuracy's labels) and Optimizer.update
(parameters and gradients); the fused step refuses the same parameters through the generic path.
"""

from __future__ import annotations

import numpy as np
import pytest

import zerodl
from zerodl import kernels
from zerodl._validate import (
    check_class_labels,
    check_distinct_layers,
    check_grad_array,
    check_param_array,
)
from zerodl.gradient import numerical_gradient
from zerodl.layers import Affine, Relu, SoftmaxWithLoss
from zerodl.networks import Sequential, TwoLayerNet


# -- accuracy's labels, as the loss checks them --------------------------------------------------------
@pytest.mark.parametrize("t, exc, fragment", [
    (np.array([0, 1, 3]), ValueError, "label 3 is out of range for 3 classes"),
    (np.array([0, -1, 2]), ValueError, "label -1"),
    (np.array([0, 1]), ValueError, "x has 3 samples but t has 2"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "must be integers"),
    (np.array(["a", "b", "c"]), TypeError, "dtype"),
    (np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]), ValueError, "one-hot"),
    (np.zeros((3, 4)), ValueError, "(3, 3)"),
])
def test_check_class_labels_refuses_what_the_loss_refuses(t, exc, fragment):
    with pytest.raises(exc, match=None) as info:
        check_class_labels(t, 3, 3, "Net.accuracy")
    assert fragment in str(info.value) and str(info.value).startswith("Net.accuracy")
    # The loss refuses the very same labels (same checks, same words).
    if fragment != "x has 3 samples but t has 2":
        with pytest.raises(exc):
            SoftmaxWithLoss().forward(np.zeros((3, 3)), t)


def test_check_class_labels_returns_class_indices():
    np.testing.assert_array_equal(check_class_labels([2, 0, 1], 3, 3, "w"), [2, 0, 1])
    np.testing.assert_array_equal(check_class_labels(np.eye(3)[[2, 0, 1]], 3, 3, "w"), [2, 0, 1])
    assert check_class_labels(np.array([1, 0], dtype=np.uint8), 2, 2, "w").dtype == np.intp


def test_accuracy_refuses_labels_out_of_range():
    net = TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(ValueError, match="label 7 is out of range for 2 classes"):
        net.accuracy(np.ones((3, 4)), np.array([0, 1, 7]))


# -- one layer object at two places ----------------------------------------------------------------------
def test_check_distinct_layers_names_both_places():
    relu = Relu()
    layers = {"Affine1": Affine(np.ones((2, 2)), np.zeros(2)), "Relu1": relu,
              "Affine2": Affine(np.ones((2, 2)), np.zeros(2)), "Relu2": relu}
    with pytest.raises(ValueError, match="Relu2 is the same Relu object as Relu1"):
        check_distinct_layers(layers, "Sequential")
    affine = Affine(np.ones((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="layer 1 is the same Affine object as layer 0"):
        check_distinct_layers([affine, affine])
    loss = SoftmaxWithLoss()
    with pytest.raises(ValueError, match="last_layer is the same SoftmaxWithLoss object as Loss"):
        check_distinct_layers({"Loss": loss}, last_layer=loss)
    check_distinct_layers([Relu(), Relu()], last_layer=SoftmaxWithLoss())  # distinct objects: fine


def test_why_a_repeated_layer_is_refused():
    """The failure the validator prevents: backprop through one Affine used twice is wrong."""
    rng = np.random.default_rng(0)
    shared = Affine(rng.standard_normal((3, 3)), rng.standard_normal(3))
    x, t = rng.standard_normal((4, 3)), np.array([0, 1, 2, 0])
    net = Sequential.__new__(Sequential)  # bypass __init__: build the faulty net by hand
    Sequential.__init__(net, {"A": shared, "R": Relu(), "B": Affine(shared.W, shared.b)})
    grads = net.gradient(x, t)
    assert set(grads) >= {"W1", "W2"}
    # With one object at both places, the second backward overwrites the first one's cache.
    faulty = Sequential.__new__(Sequential)
    try:
        Sequential.__init__(faulty, {"A": shared, "R": Relu(), "B": shared})
    except ValueError as exc:  # once the lead's call is in: refused, which is the point
        assert "same Affine object" in str(exc)
        return
    faulty.loss(x, t)
    faulty.gradient(x, t)
    assert not np.allclose(shared.dW, grads["W1"] + grads["W2"])


def test_sequential_refuses_a_layer_used_twice():
    relu = Relu()
    with pytest.raises(ValueError, match="same Relu object"):
        Sequential([Affine(np.ones((2, 2)), np.zeros(2)), relu, Affine(np.ones((2, 2)), np.zeros(2)), relu])


# -- parameters and gradients before any kernel ----------------------------------------------------------
@pytest.mark.parametrize("param, exc, fragment", [
    (np.ones(3, dtype=np.float16), TypeError, "float16"),
    (np.ones(3, dtype=np.complex128), TypeError, "complex128"),
    (np.ones(3, dtype=np.int64), TypeError, "int64"),
    ([1.0, 2.0], TypeError, "list"),
    (np.ones((3, 2))[:, 0], ValueError, "C-contiguous"),
])
def test_check_param_array(param, exc, fragment):
    with pytest.raises(exc, match=fragment):
        check_param_array("SGD.update", "W1", param)


def test_check_param_array_refuses_read_only():
    param = np.ones(3)
    param.flags.writeable = False
    with pytest.raises(ValueError, match="SGD.update: parameter 'W1' is read-only"):
        check_param_array("SGD.update", "W1", param)
    check_param_array("SGD.update", "W1", np.ones(3, dtype=np.float32))


def test_check_grad_array():
    param = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="must hold real numbers, got dtype complex128"):
        check_grad_array("Adam.update", "W1", np.ones(3, dtype=complex), param)
    with pytest.raises(TypeError, match="bool"):
        check_grad_array("Adam.update", "W1", np.ones(3, dtype=bool), param)
    with pytest.raises(ValueError, match=r"shape \(2,\), parameter has \(3,\)"):
        check_grad_array("Adam.update", "W1", np.ones(2), param)
    out = check_grad_array("Adam.update", "W1", np.arange(3), param)
    assert out.dtype == np.float32 and out.flags.c_contiguous


@pytest.mark.parametrize("backend_name", zerodl.BACKENDS)
def test_the_validation_is_what_stands_between_users_and_the_kernels(backend_name):
    """Both backends' kernels behave differently on what the validators refuse (which is why the
    check runs before them): a read-only parameter, a complex gradient."""
    with zerodl.use_backend(backend_name):
        update = kernels.get("sgd_update")
        param = np.ones(3)
        param.flags.writeable = False
        with pytest.raises(Exception):  # noqa: B017 - numpy: ValueError, numba: TypingError
            update(param, np.ones(3), 0.1)
        with pytest.raises(ValueError, match="read-only"):
            check_param_array("SGD.update", "W1", param)


@pytest.mark.parametrize("backend_name", zerodl.BACKENDS)
def test_optimizers_refuse_the_same_inputs_in_both_backends(backend_name):
    with zerodl.use_backend(backend_name):
        read_only = np.ones(3)
        read_only.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            zerodl.SGD().update({"W1": read_only}, {"W1": np.ones(3)})
        with pytest.raises(TypeError, match="float16"):
            zerodl.Adam().update({"W1": np.ones(3, np.float16)}, {"W1": np.ones(3, np.float16)})
        with pytest.raises(TypeError, match="complex"):
            zerodl.Momentum().update({"W1": np.ones(3)}, {"W1": np.ones(3, dtype=complex)})


# -- numerical_gradient's step ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, exc, fragment", [
    (np.float16, TypeError, "float16 is too coarse for the step h=0.0001"),
    (np.int64, TypeError, "int64"),
    (np.bool_, TypeError, "bool"),
    (np.complex128, TypeError, "complex128"),
])
def test_numerical_gradient_refuses_dtypes_its_step_vanishes_in(dtype, exc, fragment):
    x = np.ones(3, dtype=dtype)
    with pytest.raises(exc, match=fragment):
        numerical_gradient(lambda v: float(np.sum(v.astype(np.float64) ** 2)), x)


def test_numerical_gradient_float16_would_have_been_zeros():
    """What the refusal prevents: with h=1e-4, float16's 1 + h == 1, every difference is 0."""
    one = np.float16(1)
    assert one + np.float16(1e-4) == one


def test_numerical_gradient_other_checks():
    with pytest.raises(ValueError, match="h must be a positive finite number"):
        numerical_gradient(lambda v: 0.0, np.ones(2), h=0.0)
    x = np.ones(2)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        numerical_gradient(lambda v: 0.0, x)
    np.testing.assert_allclose(numerical_gradient(lambda v: float(np.sum(v ** 2)), np.array([1.0, -2.0])),
                               [2.0, -4.0], rtol=1e-6)
    assert numerical_gradient(lambda v: float(np.sum(v ** 2)), np.ones(2, np.float32)).dtype == np.float32
