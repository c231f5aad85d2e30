"""The book's chapter 7 layers: Convolution and (max) Pooling, layout ``(N, C, H, W)``.

``from common.layers import Convolution, Pooling`` in the book becomes
``from zerodl.layers import Convolution, Pooling``. The arithmetic is in the kernels of the active
backend (:mod:`zerodl.kernels.convolution`, :mod:`zerodl.kernels.pooling`).

Departures from the book, on purpose:

* a filter, stride and padding that do not tile the input exactly raise a ``ValueError`` naming
  the layer and the sizes (the book's ``im2col`` floors silently and drops the last rows/columns);
* ``Pooling``'s output size counts its padding (the book's formula ignores it and breaks for
  ``pad > 0``); its default stride is 2, the book repository's corrected default;
* inputs of the other float precision are converted to ``W``'s dtype; integer inputs are refused;
  ``backward`` never writes into ``dout``;
* the Numba backend keeps no ``col`` matrix between forward and backward (``self.col`` is ``None``
  there); it rebuilds the patches, a few images at a time, during ``backward``.
"""

from __future__ import annotations

import numbers

import numpy as np

import zerodl.kernels as kernels  # noqa: PLR0402 (names the module, not the package: no edge to zerodl/__init__)
from zerodl._validate import as_float_array, check_ndim, check_nonempty, check_same_shape
from zerodl.layers.base import Layer
from zerodl.layers.core import Relu
from zerodl.layers.fused import ActivationSpec, Epilogue, Piece
from zerodl.util import conv_output_size


def _positive_int(value: object, where: str, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{where}: {name} must be {kind}, got {value!r}")
    return int(value)


def _check_images(x: object, where: str, dtype: np.dtype | None = None) -> np.ndarray:
    x = as_float_array(x, where, "x", dtype=dtype)
    if x.ndim != 4:
        hint = " (one image: x[np.newaxis]; flat MNIST rows: load with flatten=False)" if x.ndim in (2, 3) else ""
        raise ValueError(f"{where}: x must have shape (N, C, H, W), got shape {x.shape}{hint}")
    check_nonempty(x, where)
    return x


class Convolution(Layer):
    """2-d convolution (cross-correlation, as the book) with bias.

    Args:
        W: filters ``(FN, C, FH, FW)``, float32 or float64; held by reference (optimizers update it
            in place).
        b: bias ``(FN,)`` of ``W``'s dtype, or one number (int or float, as the book's
            ``Convolution(w, 0)``) for every filter, stored as ``(FN,)`` of ``W``'s dtype.
        stride: positive step of the window.
        pad: zero padding on every side (``>= 0``).

    ``forward(x (N, C, H, W))`` → ``(N, FN, OH, OW)`` with ``OH = (H + 2 pad - FH) / stride + 1``
    (see :func:`zerodl.util.conv_output_size`). ``backward(dout (N, FN, OH, OW))`` → ``dx`` of
    ``x``'s shape, and sets ``dW (FN, C, FH, FW)`` and ``db (FN,)``.
    """

    param_names = ("W", "b")
    uses_task_threads = True

    def __init__(self, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> None:
        W = as_float_array(W, "Convolution", "W")
        check_ndim(W, "Convolution", "W", (4,), "(FN, C, FH, FW)")
        check_nonempty(W, "Convolution", "W")
        scalar = isinstance(b, numbers.Real) and not isinstance(b, bool)
        if scalar or (isinstance(b, np.ndarray) and b.ndim == 0 and b.dtype.kind in "iuf"):
            # The book's ch07/apply_filter.py passes the number 0: one bias for every filter, as
            # the book's ``+ self.b`` broadcasts it.
            b = np.full(W.shape[0], float(b), dtype=W.dtype)
        b = as_float_array(b, "Convolution", "b", dtype=W.dtype)
        if b.shape != (W.shape[0],):
            raise ValueError(
                f"Convolution: b must have shape ({W.shape[0]},) to match W {W.shape}, got {b.shape}"
            )
        self.W = W
        self.b = b
        self.stride = _positive_int(stride, "Convolution", "stride")
        self.pad = _positive_int(pad, "Convolution", "pad", minimum=0)
        self.x: np.ndarray | None = None
        self.col: np.ndarray | None = None
        self.dW: np.ndarray | None = None
        self.db: np.ndarray | None = None

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(FN, OH, OW)`` for one input image of shape ``(C, H, W)``; ValueError if it does not tile."""
        where = self._where("forward")
        FN, C, FH, FW = self.W.shape
        c, h, w = input_shape
        if c != C:
            raise ValueError(
                f"{where}: x has {c} channels (shape (N, {c}, {h}, {w})) but W {self.W.shape} "
                f"expects {C}"
            )
        oh = conv_output_size(h, FH, self.stride, self.pad, where=where, axis="input height")
        ow = conv_output_size(w, FW, self.stride, self.pad, where=where, axis="input width")
        return FN, oh, ow

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x (N, C, H, W)`` → ``(N, FN, OH, OW)``."""
        where = self._where("forward")
        x = _check_images(x, where, self.W.dtype)
        self.output_shape(x.shape[1:])
        out, self.col = kernels.get("conv_forward")(x, self.W, self.b, self.stride, self.pad)
        self.x = x
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout (N, FN, OH, OW)`` → ``dx (N, C, H, W)``; sets ``dW``, ``db``."""
        dx, self.dW, self.db = kernels.get("conv_backward")(
            self._checked_dout(dout), self.x, self.W, self.col, self.stride, self.pad
        )
        return dx

    def backward_params(self, dout: np.ndarray) -> None:
        """Sets ``dW``, ``db`` as :meth:`backward` does, without the ``dx`` product and ``col2im``."""
        _, self.dW, self.db = kernels.get("conv_backward")(
            self._checked_dout(dout), self.x, self.W, self.col, self.stride, self.pad, False
        )

    def _checked_dout(self, dout: np.ndarray) -> np.ndarray:
        where = self._where("backward")
        self._require_forward(self.x)
        dout = as_float_array(dout, where, "dout", dtype=self.W.dtype)
        check_same_shape(dout, (self.x.shape[0], *self.output_shape(self.x.shape[1:])), where, "dout")
        return dout

    def fused_piece(self) -> ConvolutionPiece:
        """Joins a fused step as a :class:`ConvolutionPiece` (absorbing a following activation)."""
        return ConvolutionPiece(self)

    def __repr__(self) -> str:
        return f"Convolution(W={self.W.shape}, stride={self.stride}, pad={self.pad})"


class Pooling(Layer):
    """Max pooling over ``pool_h × pool_w`` windows, channel by channel.

    Args:
        pool_h, pool_w: window size.
        stride: step of the window (default 2, the book repository's corrected default).
        pad: zero padding on every side; padding cells count as 0 in the maximum (the book's
            ``im2col`` semantics).

    ``forward(x (N, C, H, W))`` → ``(N, C, OH, OW)``, dtype kept; keeps ``arg_max`` (the index of
    each window's maximum, ``(N, C, OH, OW)``). ``backward(dout)`` routes each gradient to the pixel
    that was the maximum.
    """

    uses_task_threads = True

    def __init__(self, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0) -> None:
        self.pool_h = _positive_int(pool_h, "Pooling", "pool_h")
        self.pool_w = _positive_int(pool_w, "Pooling", "pool_w")
        self.stride = _positive_int(stride, "Pooling", "stride")
        self.pad = _positive_int(pad, "Pooling", "pad", minimum=0)
        self.x_shape: tuple[int, int, int, int] | None = None
        self.x_dtype: np.dtype | None = None
        self.arg_max: np.ndarray | None = None

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(C, OH, OW)`` for one input image of shape ``(C, H, W)``; ValueError if it does not tile."""
        where = self._where("forward")
        c, h, w = input_shape
        oh = conv_output_size(h, self.pool_h, self.stride, self.pad, where=where, axis="input height")
        ow = conv_output_size(w, self.pool_w, self.stride, self.pad, where=where, axis="input width")
        return c, oh, ow

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x (N, C, H, W)`` → ``(N, C, OH, OW)``."""
        where = self._where("forward")
        x = _check_images(x, where)
        self.output_shape(x.shape[1:])
        out, self.arg_max = kernels.get("max_pool_forward")(
            x, self.pool_h, self.pool_w, self.stride, self.pad
        )
        self.x_shape = x.shape
        self.x_dtype = x.dtype
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout (N, C, OH, OW)`` → ``dx (N, C, H, W)``."""
        where = self._where("backward")
        self._require_forward(self.arg_max)
        dout = as_float_array(dout, where, "dout", dtype=self.x_dtype)
        check_same_shape(dout, self.arg_max.shape, where, "dout")
        return kernels.get("max_pool_backward")(
            dout, self.arg_max, self.x_shape, self.pool_h, self.pool_w, self.stride, self.pad
        )

    def fused_piece(self) -> PoolingPiece:
        """Joins a fused step as a :class:`PoolingPiece`."""
        return PoolingPiece(self)

    def __repr__(self) -> str:
        return f"Pooling(pool_h={self.pool_h}, pool_w={self.pool_w}, stride={self.stride}, pad={self.pad})"


def _image_shape(in_shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    if len(in_shape) != 4:
        raise ValueError(f"{where}: x must have shape (N, C, H, W), got shape {in_shape}")
    return in_shape[1], in_shape[2], in_shape[3]


class ConvolutionPiece(Piece):
    """Convolution's part of a fused step: the conv kernels without per-call validation.

    A following ReLU is absorbed into the convolution's own fused kernels (``conv_relu_*``: the ReLU
    in the pass that scatters the product, its mask read off the output), and then a following 2x2,
    stride-2 max pooling too (``conv_relu_pool_*``: the full-resolution output is never kept). Any
    other activation becomes the epilogue (bias and activation in one pass over the output).
    """

    def __init__(self, layer: Convolution) -> None:
        super().__init__(layer)
        self.epilogue = Epilogue()
        self.relu = False  # ReLU absorbed into the conv_relu kernels
        self.pool: Pooling | None = None  # 2x2/2 pooling absorbed into conv_relu_pool
        self.zero_bias = np.zeros_like(layer.b)
        self.x: np.ndarray | None = None
        self.kept: tuple = ()
        self.dW: np.ndarray | None = None
        self.db: np.ndarray | None = None
        self.then: Piece | None = None  # the next piece, when this one computes its product

    def chain(self, nxt: Piece) -> None:
        # With the pooling absorbed, a following Affine's product is computed by this piece's
        # training forward (conv_relu_pool_affine_forward: one call onto both cores, each task its
        # images' pooled rows and then their rows of the product).
        # Its backward products likewise run in this piece's backward call
        # (conv_relu_pool_affine_backward: the convolution's groups wait for dx only).
        self.then = nxt if self.pool is not None and getattr(nxt, "takes_product", False) else None
        if self.then is not None:
            self.then.defer_backward = True

    def out_shape(self, in_shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        shape = (in_shape[0], *self.layer.output_shape(_image_shape(in_shape, where)))
        if self.pool is not None:
            shape = (shape[0], *self.pool.output_shape(shape[1:]))
        return shape

    def absorb(self, activation: ActivationSpec, name: str) -> bool:
        if self.relu or self.pool is not None:
            return False
        if activation is Relu.fused_activation and self.epilogue.activation is None:
            self.relu = True
            return True
        return self.epilogue.absorb(activation, name)

    def absorb_layer(self, layer: object) -> bool:
        if (self.relu and self.pool is None and type(layer) is Pooling
                and (layer.pool_h, layer.pool_w, layer.stride, layer.pad) == (2, 2, 2, 0)):
            self.pool = layer
            return True
        return False

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        layer = self.layer
        if not train:
            return self._infer(x)
        self.x = x
        if self.pool is not None:
            if self.then is None:
                pooled, arg_max, keep = kernels.get("conv_relu_pool_forward")(x, layer.W, layer.b, layer.stride,
                                                                              layer.pad)
            else:
                W2, z, parts = self.then.product_target(x.shape[0])
                pooled, arg_max, keep = kernels.get("conv_relu_pool_affine_forward")(
                    x, layer.W, layer.b, layer.stride, layer.pad, W2, z, parts)
                self.then.take_product(pooled, z)
            self.kept = (pooled, arg_max, keep)
            return pooled
        if self.relu:
            out, keep = kernels.get("conv_relu_forward")(x, layer.W, layer.b, layer.stride, layer.pad)
            self.kept = (out, keep)
            return out
        # With an epilogue activation the bias is the epilogue's: the product gets a zero bias
        # (x + 0 is exact, so the output is the layer path's to the bit).
        bias = self.zero_bias if self.epilogue.activation is not None else layer.b
        out, keep = kernels.get("conv_forward")(x, layer.W, bias, layer.stride, layer.pad)
        self.kept = (keep,)
        if self.epilogue.activation is None:
            return out
        return self.epilogue.forward(out, layer.b, self.buffers)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        # Inference (no backward follows): the kernels that keep nothing. With a pooling, the
        # pooled values only (no arg-max, no full-resolution output); with a ReLU, the fused op's
        # output without its col; nothing is stored on the piece, so a training step's caches (and
        # a backward after it) are left as they were.
        layer = self.layer
        if self.pool is not None:
            return kernels.get("conv_relu_pool_inference")(x, layer.W, layer.b, layer.stride, layer.pad)
        if self.relu:
            return kernels.get("conv_relu_forward")(x, layer.W, layer.b, layer.stride, layer.pad)[0]
        if self.epilogue.activation is None:
            return kernels.get("conv_forward")(x, layer.W, layer.b, layer.stride, layer.pad)[0]
        out, _ = kernels.get("conv_forward")(x, layer.W, self.zero_bias, layer.stride, layer.pad)
        act = self.epilogue.activation
        result = out if act.keeps == "output" else np.empty_like(out)
        kernels.get(act.forward_op)(out, layer.b, result)
        return result

    def backward(self, dout: np.ndarray, need_dx: bool) -> np.ndarray | None:
        layer = self.layer
        if self.pool is not None:
            pooled, arg_max, keep = self.kept
            pending = self.then.pending_backward(dout) if self.then is not None else None
            if pending is not None:  # the next Affine's products, dx (= dout) first
                dx, self.dW, self.db = kernels.get("conv_relu_pool_affine_backward")(
                    *pending, pooled, arg_max, self.x, layer.W, keep, layer.stride, layer.pad, need_dx)
                return dx
            dx, self.dW, self.db = kernels.get("conv_relu_pool_backward")(
                dout, pooled, arg_max, self.x, layer.W, keep, layer.stride, layer.pad, need_dx)
        elif self.relu:
            out, keep = self.kept
            dx, self.dW, self.db = kernels.get("conv_relu_backward")(
                dout, out, self.x, layer.W, keep, layer.stride, layer.pad, need_dx)
        else:
            dout = self.epilogue.backward(dout)
            dx, self.dW, self.db = kernels.get("conv_backward")(
                dout, self.x, layer.W, self.kept[0], layer.stride, layer.pad, need_dx)
        return dx

    def grad_arrays(self) -> tuple[np.ndarray, ...]:
        return (self.dW, self.db)

    def describe(self) -> str:
        layer = self.layer
        extra = " + Relu" if self.relu else self.epilogue.describe()
        if self.pool is not None:
            extra += " + Pooling(2x2/s2)"
        return f"Convolution{layer.W.shape}/s{layer.stride}p{layer.pad}{extra}"


class PoolingPiece(Piece):
    """Pooling's part of a fused step: the pooling kernels without per-call validation."""

    def __init__(self, layer: Pooling) -> None:
        super().__init__(layer)
        self.x_shape: tuple[int, ...] = ()
        self.arg_max: np.ndarray | None = None

    def out_shape(self, in_shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return (in_shape[0], *self.layer.output_shape(_image_shape(in_shape, where)))

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        layer = self.layer
        out, self.arg_max = kernels.get("max_pool_forward")(x, layer.pool_h, layer.pool_w, layer.stride, layer.pad)
        self.x_shape = x.shape
        return out

    def backward(self, dout: np.ndarray, need_dx: bool) -> np.ndarray | None:
        layer = self.layer
        return kernels.get("max_pool_backward")(
            dout, self.arg_max, self.x_shape, layer.pool_h, layer.pool_w, layer.stride, layer.pad
        )

    def describe(self) -> str:
        return f"Pooling({self.layer.pool_h}x{self.layer.pool_w}/s{self.layer.stride})"
