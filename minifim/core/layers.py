"""Layers of a :class:`minifim.Sequential` network, named and parameterised like ``torch.nn``.

Every layer maps a batch array ``x: (N, *in_shape)`` to ``(N, *out_shape)``; the shapes exclude
the sample axis ``N``, which no layer mixes. Parametric layers (:class:`Linear`, :class:`Conv2d`)
are affine maps of an *unfolded* input and share their weight over ``R`` positions:

- ``unfold(x) -> (N, R, in)`` (:class:`Linear` on ``(N, *pos, D)``: the positions flattened,
  ``R = prod(pos)``, ``in = D``; :class:`Conv2d` on ``(N, C_in, H, W)``: the im2col patches,
  ``R = H_out W_out``, ``in = C_in kh kw`` in the order of the weight's flattening
  ``(c, i, j)``, zero padding);
- ``z_unf = unfold(x) W^T + b: (N, R, out)`` with ``W: (out, in)`` the weight as a matrix
  (:class:`Conv2d`: the PyTorch weight ``(out, C_in, kh, kw)`` reshaped row-major);
- ``fold(z_unf) -> (N, *out_shape)`` (``Linear``: ``(N, *pos, out)``; ``Conv2d``: NCHW
  ``(N, out, H_out, W_out)``).

The gradient of a scalar with respect to ``W`` is therefore ``sum_r dz_unf[r]^T unfold(x)[r]``,
a sum over positions (the weight sharing); with ``R = 1`` (a plain MLP) it is an outer product.

The forward pass of every layer (:meth:`Layer.apply`) is written with ``autograd.numpy``, so the
``backend="autograd"`` routes differentiate the same computation; the batched backpropagation
(:mod:`minifim.core.scores`) uses :meth:`ParametricLayer.unfold_seeds`,
:meth:`ParametricLayer.input_grad` and :meth:`Layer.backward`, all GEMMs, reshapes and strided
slices of whole batches (no loop over samples or positions; ``Conv2d``'s col2im loops over the
``kh kw`` kernel offsets only).

Shapes are bound when a :class:`minifim.Sequential` builds its layers (:meth:`Layer.build`);
each network owns copies of the layers it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import autograd.numpy as anp
import numpy as np

from .._validation import check_bool, check_int
from .activations import ACTIVATIONS
from .activations import Activation as ActivationFunction

__all__ = [
    "Layer",
    "ParametricLayer",
    "Linear",
    "Conv2d",
    "Flatten",
    "Mean",
    "Elementwise",
    "Tanh",
    "ReLU",
    "Sigmoid",
    "Softplus",
    "Identity",
    "LAYERS",
    "layer_from_config",
    "activation_layer",
]

Shape = tuple[int, ...]


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (each ``>= minimum``) as a pair, like ``torch.nn.Conv2d``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or a pair of ints, received {value!r}")
        return (
            check_int(value[0], f"{name}[0]", minimum),
            check_int(value[1], f"{name}[1]", minimum),
        )
    v = check_int(value, name, minimum)
    return (v, v)


class Layer:
    """Base class: a map ``(N, *in_shape) -> (N, *out_shape)`` (see the module docstring).

    Attributes set by :meth:`build`: ``in_shape`` and ``out_shape`` (without ``N``).
    """

    parametric: bool = False
    in_shape: Shape
    out_shape: Shape

    # --- description ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-serialisable description; :func:`layer_from_config` rebuilds the layer."""
        return {"type": type(self).__name__}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layer) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(repr(self))

    # --- shapes -----------------------------------------------------------------------------
    def build(self, in_shape: Shape) -> Shape:
        """Bind the input shape (without ``N``), validate it, return the output shape."""
        self.in_shape = tuple(in_shape)
        self.out_shape = self._output_shape(self.in_shape)
        return self.out_shape

    def _output_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    # --- non-parametric forward / backward (overridden) --------------------------------------
    def apply(self, x: Any) -> Any:
        """The layer on a batch ``x: (N, *in_shape)`` (autograd-compatible)."""
        raise NotImplementedError

    def backward(self, g: np.ndarray, x: np.ndarray, sample_axis: int) -> np.ndarray:
        """Vector-Jacobian products: ``g: (A, B, *out_shape) -> (A, B, *in_shape)``.

        ``g`` has two leading axes, one of which (``sample_axis``, 0 or 1) is the sample axis of
        the cached layer input ``x: (N, *in_shape)``; the other is a batch of seeds.
        """
        raise NotImplementedError

    def tangent(self, dx: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Jacobian-vector products: ``dx: (m, N, *in_shape) -> (m, N, *out_shape)``."""
        raise NotImplementedError


class ParametricLayer(Layer):
    """A weight-sharing affine layer ``fold(unfold(x) W^T + b)`` (see the module docstring).

    Attributes
    ----------
    weight_shape : tuple of int
        The PyTorch layout of the weight.
    matrix_shape : tuple of int
        ``(out, in)``, the weight as the matrix acting on the unfolded input.
    bias : bool
    positions : int
        ``R``, the positions sharing the weight (set by :meth:`build`).
    """

    parametric = True
    bias: bool
    weight_shape: Shape
    matrix_shape: tuple[int, int]
    positions: int

    @property
    def num_params(self) -> int:
        """Weights and biases of the layer: ``out * in (+ out)``."""
        out, inp = self.matrix_shape
        return out * inp + (out if self.bias else 0)

    @property
    def fan_in(self) -> int:
        """``in``, the inputs of one output unit (PyTorch's ``fan_in`` of the weight)."""
        return self.matrix_shape[1]

    def unfold(self, x: Any) -> Any:
        """``x: (N, *in_shape) -> (N, R, in)`` (autograd-compatible)."""
        raise NotImplementedError

    def fold(self, z: Any) -> Any:
        """``z: (N, R, out) -> (N, *out_shape)`` (autograd-compatible)."""
        raise NotImplementedError

    def unfold_seeds(self, B: np.ndarray) -> np.ndarray:
        """Seeds at the outputs ``(A, B, *out_shape) -> (A, B, R, out)``, the unfolded layout."""
        raise NotImplementedError

    def input_grad(self, cols: np.ndarray) -> np.ndarray:
        """The adjoint of :meth:`unfold`: ``(M, R, in) -> (M, *in_shape)`` (col2im for Conv2d)."""
        raise NotImplementedError

    def input_seeds(self, B: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Seeds carried through the layer: ``B: (M, *out_shape) -> (M, *in_shape)``.

        The vector-Jacobian product with respect to the input, ``unfold^T(B_unf W)`` for ``W:
        (out, in)``: one GEMM ``(M R, out) x (out, in)`` and :meth:`input_grad`.
        """
        M = B.shape[0]
        (out, inp), R = self.matrix_shape, self.positions
        Bu = self.unfold_seeds(B[None]).reshape(M * R, out)
        return self.input_grad((Bu @ W).reshape(M, R, inp))

    def apply_params(self, W: Any, b: Any, x: Any) -> Any:
        """``fold(unfold(x) W^T + b)`` for ``W: (out, in)`` and ``b: (out,)`` or ``None``."""
        z = anp.dot(self.unfold(x), anp.transpose(W))
        if b is not None:
            z = z + b
        return self.fold(z)


class Linear(ParametricLayer):
    """``z = x W^T + b`` on the last axis, like ``torch.nn.Linear``.

    An input ``(N, *pos, in_features)`` shares the weight over the ``R = prod(pos)`` positions
    (the *expand* setting when the positions reach the output). ``W: (out_features,
    in_features)``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        self.in_features = check_int(in_features, "in_features", 1)
        self.out_features = check_int(out_features, "out_features", 1)
        self.bias = check_bool(bias, "bias")
        self.weight_shape = (self.out_features, self.in_features)
        self.matrix_shape = (self.out_features, self.in_features)

    def config(self) -> dict[str, Any]:
        return {
            "type": "Linear",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
        }

    def _output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) < 1 or in_shape[-1] != self.in_features:
            raise ValueError(
                f"input_shape: {self!r} expects inputs (N, ..., {self.in_features}), "
                f"received (N, {', '.join(map(str, in_shape))})"
            )
        self.positions = math.prod(in_shape[:-1])
        return in_shape[:-1] + (self.out_features,)

    def apply_params(self, W: Any, b: Any, x: Any) -> Any:
        z = anp.dot(x, anp.transpose(W))
        return z if b is None else z + b

    def unfold(self, x: Any) -> Any:
        return anp.reshape(x, (np.shape(x)[0], self.positions, self.in_features))

    def fold(self, z: Any) -> Any:
        return anp.reshape(z, (np.shape(z)[0],) + self.out_shape)

    def unfold_seeds(self, B: np.ndarray) -> np.ndarray:
        return B.reshape(B.shape[:2] + (self.positions, self.out_features))

    def input_grad(self, cols: np.ndarray) -> np.ndarray:
        return cols.reshape((cols.shape[0],) + self.in_shape)


class Conv2d(ParametricLayer):
    """2-D cross-correlation on NCHW inputs with zero padding, like ``torch.nn.Conv2d``.

    ``H_out = floor((H + 2 p - d (k - 1) - 1) / s) + 1`` per spatial axis; the weight
    ``(out_channels, in_channels, kh, kw)`` acts as the matrix ``(out_channels, in_channels kh
    kw)`` on the im2col patches ``(N, H_out W_out, in_channels kh kw)`` (position ``r = h W_out +
    w``, column ``c kh kw + i kw + j``), so the weight is shared over ``R = H_out W_out``
    positions.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or pair of int, >= 1
    padding : int or pair of int, >= 0
    bias : bool
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
    ) -> None:
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self.out_channels = check_int(out_channels, "out_channels", 1)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dilation = _pair(dilation, "dilation", 1)
        self.bias = check_bool(bias, "bias")
        kh, kw = self.kernel_size
        self.weight_shape = (self.out_channels, self.in_channels, kh, kw)
        self.matrix_shape = (self.out_channels, self.in_channels * kh * kw)

    def config(self) -> dict[str, Any]:
        return {
            "type": "Conv2d",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "bias": self.bias,
        }

    def __repr__(self) -> str:
        return (
            f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias})"
        )

    def _output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise ValueError(
                f"input_shape: {self!r} expects inputs (N, {self.in_channels}, H, W), "
                f"received (N, {', '.join(map(str, in_shape))})"
            )
        spatial = []
        for ax, size in enumerate(in_shape[1:]):
            k, s, p, d = (
                self.kernel_size[ax],
                self.stride[ax],
                self.padding[ax],
                self.dilation[ax],
            )
            span = d * (k - 1) + 1
            if span > size + 2 * p:
                raise ValueError(
                    f"kernel_size: the dilated kernel of {self!r} spans {span} pixels on "
                    f"spatial axis {ax}, larger than the padded input ({size} + 2 * {p} = "
                    f"{size + 2 * p}; input_shape (N, {', '.join(map(str, in_shape))}))"
                )
            spatial.append((size + 2 * p - span) // s + 1)
        Ho, Wo = spatial
        self.positions = Ho * Wo
        self._index = self._im2col_index(in_shape, Ho, Wo)
        return (self.out_channels, Ho, Wo)

    def _im2col_index(self, in_shape: Shape, Ho: int, Wo: int) -> np.ndarray:
        """``(R, C_in kh kw)`` indices into the flattened input ``(C_in H W,)``; padding
        positions point at index ``C_in H W`` (a zero appended to each sample)."""
        C, H, W = in_shape
        kh, kw = self.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        h = (np.arange(Ho) * sh - ph)[:, None] + np.arange(kh)[None, :] * dh  # (Ho, kh)
        w = (np.arange(Wo) * sw - pw)[:, None] + np.arange(kw)[None, :] * dw  # (Wo, kw)
        hh = h[:, None, None, :, None]  # (Ho, 1, 1, kh, 1)
        ww = w[None, :, None, None, :]  # (1, Wo, 1, 1, kw)
        cc = np.arange(C)[None, None, :, None, None]
        valid = (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        idx = cc * (H * W) + hh * W + ww
        idx = np.where(valid, idx, C * H * W)
        return idx.reshape(Ho * Wo, C * kh * kw).astype(np.intp)

    def unfold(self, x: Any) -> Any:
        n = np.shape(x)[0]
        flat = anp.reshape(x, (n, -1))
        # one zero appended per sample: the padding positions of the index point at it
        padded = anp.concatenate([flat, np.zeros((n, 1))], axis=1)
        return padded[:, self._index]

    def fold(self, z: Any) -> Any:
        n = np.shape(z)[0]
        return anp.reshape(anp.transpose(z, (0, 2, 1)), (n,) + self.out_shape)

    def unfold_seeds(self, B: np.ndarray) -> np.ndarray:
        A, K = B.shape[:2]
        return B.reshape(A, K, self.out_channels, self.positions).transpose(0, 1, 3, 2)

    def input_grad(self, cols: np.ndarray) -> np.ndarray:
        """col2im: scatter-add the patch gradients back onto the (cropped) padded input."""
        M = cols.shape[0]
        C, _, _ = self.in_shape
        _, Ho, Wo = self.out_shape
        kh, kw = self.kernel_size
        # one transposing copy to (kh, kw, C, Ho, Wo, M): with the batch axis innermost, each
        # kernel offset is one long-stride-1 add onto a strided window of the padded input
        c6 = np.ascontiguousarray(cols.reshape(M, Ho, Wo, C, kh, kw).transpose(4, 5, 3, 1, 2, 0))
        return self._col2im_batch_last(c6)

    # The dense route of :meth:`input_seeds` is taken when its GEMM costs at most this many
    # times the im2col GEMM (its flops ratio is ``H W / (kh kw)``) and its matrix is small.
    DENSE_FLOPS_RATIO = 4.0
    DENSE_MAP_BYTES = 2**25

    def dense_input_map(self, W: np.ndarray) -> np.ndarray:
        """The convolution's input-to-output linear map as a matrix ``(out R, C_in H W)``.

        Row ``o R + r`` (NCHW order of the output), column ``c H W + h W + w`` (of the
        input): ``T[o R + r, idx[r, q]] = W[o, q]`` over the im2col index ``idx: (R, in)``
        (the padding entries, which read a zero, are dropped). ``z_flat = x_flat T^T``.
        """
        C, H, Wd = self.in_shape
        out, R = self.out_channels, self.positions
        T = np.zeros((out, R, C * H * Wd + 1))
        # for a fixed position the patch entries read distinct pixels (padding aside), so one
        # fancy assignment per position set is exact; the padding column is cut off below
        T[:, np.arange(R)[:, None], self._index] = W[:, None, :]
        return T[:, :, : C * H * Wd].reshape(out * R, C * H * Wd)

    def _dense_is_cheaper(self) -> bool:
        C, H, W = self.in_shape
        out, R = self.out_channels, self.positions
        ratio = (H * W) / (self.kernel_size[0] * self.kernel_size[1])
        return ratio <= self.DENSE_FLOPS_RATIO and 8 * out * R * C * H * W <= self.DENSE_MAP_BYTES

    def input_seeds(self, B: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Seeds carried through the convolution: ``B: (M, out, H_out, W_out) -> (M, C_in, H, W)``.

        The transposed convolution ``B -> unfold^T(B_unf W)``, by the cheaper of two exact
        routes. Small images (``H W <= 4 kh kw``): one GEMM ``(M, out R) x (out R, C_in H
        W)`` with :meth:`dense_input_map` (``2 M out R C_in H W`` flops, no col2im).
        Otherwise one GEMM ``(kh kw C_in, out) x (out, R M)`` that writes the patch
        gradients directly in the batch-last layout ``(kh, kw, C_in, H_out, W_out, M)`` (the
        seeds, ``R / (C_in kh kw)`` times smaller than the patches, are the array
        transposed), then the ``kh kw`` strided adds of the col2im.
        """
        M = B.shape[0]
        C, H, Wd = self.in_shape
        out, R = self.out_channels, self.positions
        flat = B.reshape(M, out * R)
        if self._dense_is_cheaper():
            return (flat @ self.dense_input_map(W)).reshape((M,) + self.in_shape)
        kh, kw = self.kernel_size
        W6 = W.reshape(out, C, kh, kw).transpose(2, 3, 1, 0).reshape(kh * kw * C, out)
        Bt = np.ascontiguousarray(flat.reshape(M, out, R).transpose(1, 2, 0))  # (out, R, M)
        _, Ho, Wo = self.out_shape
        c6 = (W6 @ Bt.reshape(out, R * M)).reshape(kh, kw, C, Ho, Wo, M)
        return self._col2im_batch_last(c6)

    def _col2im_batch_last(self, c6: np.ndarray) -> np.ndarray:
        """``(kh, kw, C_in, H_out, W_out, M) -> (M, C_in, H, W)``: the kernel offsets' strided
        adds onto the padded input, batch axis innermost, then cropped."""
        M = c6.shape[-1]
        C, H, W = self.in_shape
        _, Ho, Wo = self.out_shape
        kh, kw = self.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        out = np.zeros((C, H + 2 * ph, W + 2 * pw, M))
        for i in range(kh):
            for j in range(kw):
                h0, w0 = i * dh, j * dw
                out[:, h0 : h0 + sh * (Ho - 1) + 1 : sh, w0 : w0 + sw * (Wo - 1) + 1 : sw] += c6[
                    i, j
                ]
        return out[:, ph : ph + H, pw : pw + W].transpose(3, 0, 1, 2)


class Flatten(Layer):
    """Flattens the axes ``start_dim .. end_dim`` into one, like ``torch.nn.Flatten``.

    Axes are counted on the batch array ``(N, *in_shape)``; ``start_dim = 0`` (the samples) is
    refused.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        self.start_dim = check_int(start_dim, "start_dim")
        self.end_dim = check_int(end_dim, "end_dim")

    def config(self) -> dict[str, Any]:
        return {"type": "Flatten", "start_dim": self.start_dim, "end_dim": self.end_dim}

    def _output_shape(self, in_shape: Shape) -> Shape:
        nd = len(in_shape) + 1
        start = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        end = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if start <= 0 or end <= 0:
            raise ValueError(
                f"start_dim: {self!r} would flatten the sample axis 0 of the batch "
                f"(N, {', '.join(map(str, in_shape))}); flatten axes >= 1"
            )
        if start >= nd or end >= nd or start > end:
            raise ValueError(
                f"start_dim: {self!r} does not fit inputs (N, {', '.join(map(str, in_shape))})"
            )
        s, e = start - 1, end - 1
        return in_shape[:s] + (math.prod(in_shape[s : e + 1]),) + in_shape[e + 1 :]

    def apply(self, x: Any) -> Any:
        return anp.reshape(x, (np.shape(x)[0],) + self.out_shape)

    def backward(self, g: np.ndarray, x: np.ndarray, sample_axis: int) -> np.ndarray:
        return g.reshape(g.shape[:2] + self.in_shape)

    def tangent(self, dx: np.ndarray, x: np.ndarray) -> np.ndarray:
        return dx.reshape(dx.shape[:2] + self.out_shape)


class Mean(Layer):
    """The average over one weight-sharing axis (the *reduce* setting, e.g. pooling).

    ``axis`` is counted as NumPy counts it on the batch array ``(N, *in_shape)``, so ``Mean(1)``
    averages the positions of ``(N, R, H)``; the sample axis 0 is refused.
    """

    def __init__(self, axis: int) -> None:
        self.axis = check_int(axis, "axis")

    def config(self) -> dict[str, Any]:
        return {"type": "Mean", "axis": self.axis}

    def _output_shape(self, in_shape: Shape) -> Shape:
        nd = len(in_shape) + 1
        ax = self.axis + nd if self.axis < 0 else self.axis
        if ax == 0:
            raise ValueError(
                f"axis: {self!r} would average over the sample axis 0 of the batch "
                f"(N, {', '.join(map(str, in_shape))}); minifim keeps samples apart"
            )
        if not 0 < ax < nd:
            raise ValueError(
                f"axis: expected an axis in [1, {nd}) of the batch "
                f"(N, {', '.join(map(str, in_shape))}), received {self.axis}"
            )
        self._ax = ax
        return in_shape[: ax - 1] + in_shape[ax:]

    def apply(self, x: Any) -> Any:
        return anp.mean(x, axis=self._ax)

    def backward(self, g: np.ndarray, x: np.ndarray, sample_axis: int) -> np.ndarray:
        size = self.in_shape[self._ax - 1]
        return np.repeat(np.expand_dims(g / size, self._ax + 1), size, axis=self._ax + 1)

    def tangent(self, dx: np.ndarray, x: np.ndarray) -> np.ndarray:
        return dx.mean(axis=self._ax + 1)


class Elementwise(Layer):
    """An elementwise activation ``phi`` (any :class:`minifim.Activation` or its name)."""

    def __init__(self, activation: str | ActivationFunction) -> None:
        from .activations import get_activation

        self.activation = get_activation(activation)

    def config(self) -> dict[str, Any]:
        name = self.activation.name
        if ACTIVATIONS.get(name) is not self.activation:
            raise ValueError(
                f"activation: a custom callable ({name!r}) cannot be serialised; use a named "
                "activation"
            )
        cls = _ACTIVATION_LAYERS.get(name)
        return {"type": cls.__name__} if cls else {"type": "Elementwise", "activation": name}

    def __repr__(self) -> str:
        if type(self) is Elementwise:
            return f"Elementwise({self.activation.name!r})"
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Elementwise) and other.activation is self.activation

    def __hash__(self) -> int:
        return hash(self.activation.name)

    def apply(self, x: Any) -> Any:
        return self.activation.phi(x)

    def backward(self, g: np.ndarray, x: np.ndarray, sample_axis: int) -> np.ndarray:
        d = np.asarray(self.activation.dphi(x))
        return g * (d[:, None] if sample_axis == 0 else d[None])

    def tangent(self, dx: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.activation.dphi(x))[None] * dx


class Tanh(Elementwise):
    """``tanh``, like ``torch.nn.Tanh``."""

    def __init__(self) -> None:
        super().__init__("tanh")


class ReLU(Elementwise):
    """``max(z, 0)``, like ``torch.nn.ReLU``."""

    def __init__(self) -> None:
        super().__init__("relu")


class Sigmoid(Elementwise):
    """``1 / (1 + exp(-z))``, like ``torch.nn.Sigmoid``."""

    def __init__(self) -> None:
        super().__init__("sigmoid")


class Softplus(Elementwise):
    """``log(1 + exp(z))``, like ``torch.nn.Softplus`` (``beta = 1``)."""

    def __init__(self) -> None:
        super().__init__("softplus")


class Identity(Elementwise):
    """``z``, like ``torch.nn.Identity``."""

    def __init__(self) -> None:
        super().__init__("identity")


_ACTIVATION_LAYERS: dict[str, type[Elementwise]] = {
    "tanh": Tanh,
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "softplus": Softplus,
    "identity": Identity,
}

#: Layer types by name (the ``"type"`` of a layer's :meth:`Layer.config`).
LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Linear, Conv2d, Flatten, Mean, Elementwise, Tanh, ReLU, Sigmoid, Softplus, Identity)
}


def activation_layer(activation: str | ActivationFunction) -> Elementwise:
    """The layer of an activation: :class:`Tanh` etc. for the named ones, else
    :class:`Elementwise` (a custom callable, with its ``autograd`` derivative)."""
    if isinstance(activation, Elementwise):
        return activation
    from .activations import get_activation

    act = get_activation(activation)
    cls = _ACTIVATION_LAYERS.get(act.name)
    if cls is not None and ACTIVATIONS[act.name] is act:
        return cast("Elementwise", cast(Any, cls)())  # the named subclasses take no argument
    return Elementwise(act)


def layer_from_config(config: Mapping[str, Any] | Layer) -> Layer:
    """A new layer from its :meth:`Layer.config` (a layer is copied through its config)."""
    if isinstance(config, Layer):
        if isinstance(config, Elementwise) and type(config) is Elementwise:
            return Elementwise(config.activation)  # custom callables are not serialisable
        config = config.config()
    if not isinstance(config, Mapping) or "type" not in config:
        raise TypeError(
            f"layers: expected minifim.layers objects or their config() dicts with a 'type', "
            f"received {type(config).__name__} {config!r}"
        )
    kind = config["type"]
    if kind not in LAYERS:
        raise ValueError(f"layers: expected a layer type in {sorted(LAYERS)}, received {kind!r}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    for key in ("kernel_size", "stride", "padding", "dilation"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    try:
        factory: Any = LAYERS[kind]
        return cast("Layer", factory(**kwargs))
    except TypeError as err:
        raise TypeError(f"layers: cannot build {kind} from {dict(config)!r} ({err})") from None
