"""The chapter 5 computational-graph nodes: multiplication and addition.

They work on Python scalars and arrays alike (the apple-shopping example uses scalars); they have no
kernels because there is nothing to compile in one multiplication.
"""

from __future__ import annotations

from typing import Any

from zerodl.layers.base import Layer


class MulLayer(Layer):
    """``out = x * y``; ``backward(dout)`` → ``(dout * y, dout * x)`` (the inputs swapped)."""

    def __init__(self) -> None:
        self.x: Any = None
        self.y: Any = None

    def forward(self, x: Any, y: Any) -> Any:
        """Scalars or broadcast-compatible arrays → their product."""
        self.x, self.y = x, y
        return x * y

    def backward(self, dout: Any) -> tuple[Any, Any]:
        """→ ``(dx, dy)``."""
        self._require_forward(self.x)
        return dout * self.y, dout * self.x


class AddLayer(Layer):
    """``out = x + y``; ``backward(dout)`` → ``(dout, dout)``."""

    def forward(self, x: Any, y: Any) -> Any:
        """Scalars or broadcast-compatible arrays → their sum."""
        return x + y

    def backward(self, dout: Any) -> tuple[Any, Any]:
        """→ ``(dx, dy)``, both ``dout * 1`` as in the book."""
        return dout * 1, dout * 1
