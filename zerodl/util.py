"""The book's ``common/util.py`` helpers that are not kernels.

``im2col`` / ``col2im`` live in :mod:`zerodl.kernels.im2col` (both twins); this module keeps the
size arithmetic the layers and networks share.
"""

from __future__ import annotations

import numbers

__all__ = ["conv_output_size"]


def _check_int(value: object, name: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{where}: {name} must be {kind}, got {value!r}")
    return int(value)


def conv_output_size(
    input_size: int, filter_size: int, stride: int = 1, pad: int = 0, *, where: str = "conv_output_size",
    axis: str = "input size",
) -> int:
    """Output length of a sliding window: ``(input_size + 2·pad - filter_size) / stride + 1``.

    The book returns this as a float and lets ``im2col`` floor it silently; zerodl returns an ``int``
    and raises ``ValueError`` when the window does not tile the padded input exactly (or does not
    fit at all), naming ``where`` (the layer), the sizes and what would fit.

    >>> conv_output_size(28, 5)
    24
    >>> conv_output_size(24, 2, stride=2)
    12
    """
    size = _check_int(input_size, axis, where, 1)
    filt = _check_int(filter_size, "filter size", where, 1)
    stride = _check_int(stride, "stride", where, 1)
    pad = _check_int(pad, "pad", where, 0)
    span = size + 2 * pad - filt
    if span < 0:
        raise ValueError(
            f"{where}: a filter of size {filt} does not fit the {axis} {size} with pad {pad} "
            f"(expected filter size <= {size + 2 * pad})"
        )
    if span % stride:
        below = size - span % stride
        above = below + stride
        sizes = f"{below} or {above}" if below >= 1 and below + 2 * pad >= filt else f"{above}"
        fits = [p for p in range(pad + 1, pad + stride) if (size + 2 * p - filt) % stride == 0]
        hint = f", or pad={fits[0]}" if fits else ""
        raise ValueError(
            f"{where}: filter size {filt} with stride {stride} and pad {pad} does not tile the "
            f"{axis} {size}: (size + 2*pad - filter) = {span} is not a multiple of the stride "
            f"{stride} (expected {axis} {sizes}{hint})"
        )
    return span // stride + 1
