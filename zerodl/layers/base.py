"""The layer protocol every zerodl layer follows (the book's, made explicit)."""

from __future__ import annotations

from typing import Any

import numpy as np

from zerodl.layers.fused import ActivationPiece, ActivationSpec, Piece

#: Activation layers by name (``"relu"``, ``"sigmoid"``, ``"gelu"``), filled by the classes that set
#: ``activation_name``: a new activation is chosen everywhere by defining it.
ACTIVATIONS: dict[str, type] = {}


class Layer:
    """Base class: ``forward(x)`` → output, ``backward(dout)`` → ``dx``.

    A layer with parameters lists their attribute names in ``param_names`` (``("W", "b")``); after
    ``backward`` the gradient of parameter ``p`` is the attribute ``"d" + p`` (``dW``, ``db``), as in
    the book. Layers whose behaviour differs between training and inference (Dropout,
    BatchNormalization) set ``takes_train_flg = True`` and accept ``forward(x, train_flg=True)``.
    """

    param_names: tuple[str, ...] = ()
    #: Non-trainable state a checkpoint must keep (BatchNormalization's running statistics):
    #: attribute names, collected by ``Sequential.buffers()``; updated in place by the layer.
    buffer_names: tuple[str, ...] = ()
    takes_train_flg: bool = False
    #: The layer's kernels spread their work over zerodl's own task threads with one BLAS thread per
    #: product (Convolution, Pooling): a network holding one runs its BLAS calls on one thread (see
    #: :attr:`zerodl.layers.fused.Piece.uses_task_threads`).
    uses_task_threads: bool = False
    #: An elementwise activation's part in a fused step (its two kernel ops and what it keeps);
    #: ``None`` for other layers. See :mod:`zerodl.layers.fused`.
    fused_activation: ActivationSpec | None = None
    #: The name an elementwise activation is chosen by (``MultiLayerNet(activation=...)``, the
    #: CLI's ``--activation``); setting it registers the class in :data:`ACTIVATIONS`.
    activation_name: str | None = None
    #: An activation's weight initialisation when a network is built with ``weight_init_std`` set
    #: to its name: ``"he"`` (√(2/n), ReLU-like) or ``"xavier"`` (√(1/n), the book's for Sigmoid).
    weight_init: str = "he"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("activation_name")
        if name is not None:
            ACTIVATIONS[name] = cls

    def fused_piece(self) -> Piece | None:
        """This layer's part of a fused training step, or ``None`` if it cannot join one.

        The default: an activation with :attr:`fused_activation` joins as an elementwise piece
        (or is absorbed by the Affine/Convolution before it); any other layer does not, and a
        network holding it takes the generic ``gradient`` + ``update`` path (``net.step_path``
        says so). Layers that can join override this (see :mod:`zerodl.layers.fused`).
        """
        if self.fused_activation is None:
            return None
        return ActivationPiece(self, self.fused_activation)

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward_params(self, dout: np.ndarray) -> None:
        """Like :meth:`backward`, for a layer whose input needs no gradient (a network's first).

        Sets the parameter gradients (``dW``, ``db``, …) exactly as :meth:`backward` does and returns
        nothing; layers whose ``dx`` costs real work (Affine, Convolution) skip computing it.
        """
        self.backward(dout)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The layer's parameter arrays by short name (``{"W": ..., "b": ...}``), not copies."""
        return {name: getattr(self, name) for name in self.param_names}

    @property
    def grads(self) -> dict[str, np.ndarray | None]:
        """Gradients from the last ``backward`` by short name (``{"W": dW, "b": db}``)."""
        return {name: getattr(self, "d" + name) for name in self.param_names}

    def _where(self, method: str) -> str:
        return f"{type(self).__name__}.{method}"

    def _describe(self) -> str:
        return ", ".join(
            f"{name}={getattr(self, name).shape}" for name in self.param_names
            if getattr(self, name, None) is not None
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"

    def _require_forward(self, attr: Any, method: str = "backward") -> None:
        if attr is None:
            raise RuntimeError(f"{self._where(method)} called before forward")
