"""Recurrent layers: RNN (tanh or ReLU), LSTM and GRU over batch-first sequences (N, T, F).

The three share one skeleton (:class:`Recurrent`) and differ only in their cell, the few lines
that turn one step's pre-activations into the new hidden state and back:

- forward: the input part of every step's pre-activations, ``x_t W_ihᵀ + b_ih`` (plus
  ``b_hh`` where it is simply added), is ONE matrix product over all T steps; each step then
  adds ``h_{t-1} W_hhᵀ`` and applies the cell;
- backward (backpropagation through time): the steps run from last to first, each giving the
  gradient of its pre-activations; dW_ih, dW_hh, the biases and dx are then ONE matrix product
  each over all steps, from the cached inputs and hidden states.

Parameters are laid out as PyTorch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``batch_first``):
``W_ih`` (G·H, F) = ``weight_ih_l0``, ``W_hh`` (G·H, H), ``b_ih``, ``b_hh``; G = 1 (RNN), 4
(LSTM: gates i, f, g, o) or 3 (GRU: r, z, n). The initial hidden (and cell) state is zero;
``reverse=True`` runs from the last step to the first.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np

from .core import (
    Key,
    Layer,
    ShapeDtype,
    as_float_array,
    boolean,
    cast_like,
    dtype_field,
    expect_shape,
    initializer_field,
    one_of,
    positive_int,
    spec,
    split_key,
)
from .init import init_param

__all__ = ["Recurrent", "RecurrentParams", "RecurrentCache", "RNN", "LSTM", "GRU"]


@attrs.frozen
class RecurrentParams:
    """RNN/LSTM/GRU params in PyTorch's layout (G = 1, 4, 3 gates; H hidden, F input features)."""

    W_ih: np.ndarray  # (G*H, F)
    W_hh: np.ndarray  # (G*H, H)
    b_ih: np.ndarray  # (G*H,)
    b_hh: np.ndarray  # (G*H,)


@attrs.frozen
class RecurrentCache:
    """What backpropagation through time needs (shapes below)."""

    x: np.ndarray  # (T, N, F): the input, time-major, in the order the steps ran
    h: np.ndarray  # (T + 1, N, H): the hidden states, h[0] = 0, time-major, in step order
    saved: tuple  # the cell's per-step arrays (see each cell's _buffers)
    state: Any = ()


def _time_major(a: np.ndarray, reverse: bool) -> np.ndarray:
    """(N, T, ...) -> a C-contiguous (T, N, ...) copy, time reversed when ``reverse``."""
    a = a.swapaxes(0, 1)
    return np.ascontiguousarray(a[::-1] if reverse else a)


@spec
class Recurrent(Layer):
    """The skeleton shared by :class:`RNN`, :class:`LSTM` and :class:`GRU`; not a layer itself.

    Inputs x (N, T, input_size) -> all hidden states y (N, T, hidden_size) (y[:, t] = h_t).
    A cell (subclass) defines ``gates`` (G), whether ``b_hh`` adds to the input part
    (``bias_hh_in_input``), which gate blocks are sigmoids (``sigmoid_gates``), ``_buffers``
    (its per-step arrays), ``_step`` (one step forward), ``_prepare`` (derivatives computed
    for all steps at once) and ``_step_back`` (one step back: the gradients of the step's
    pre-activations).
    """

    input_size: int = attrs.field(validator=positive_int)
    hidden_size: int = attrs.field(validator=positive_int)
    reverse: bool = attrs.field(default=False, kw_only=True, validator=boolean)
    w_init: Any = initializer_field()
    b_init: Any = initializer_field()
    dtype: str = dtype_field()

    gates: ClassVar[int] = 1
    bias_hh_in_input: ClassVar[bool] = True  # False: b_hh is applied inside the cell (GRU)
    # which gate blocks are sigmoids: computed as sigmoid(a) = (1 + tanh(a/2))/2 (numpy's tanh
    # is vectorized, many times faster than scipy's expit), with the halving folded into the
    # weights of those rows (exact: a power of 2) and one tanh over all the gates
    sigmoid_gates: ClassVar[tuple[bool, ...]] = (False,)

    # --- protocol -------------------------------------------------------------------------

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        gh, h = self.gates * self.hidden_size, self.hidden_size
        return {"W_ih": (gh, self.input_size), "W_hh": (gh, h), "b_ih": (gh,), "b_hh": (gh,)}

    def param_shapes(self) -> RecurrentParams:
        return RecurrentParams(**{k: ShapeDtype(s, self.dtype) for k, s in self._shapes().items()})

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, t, _ = expect_shape(self, input_shape, ("N", "T", self.input_size))
        return (n, t, self.hidden_size)

    def kink_distance(self, params: RecurrentParams, state: Any, x: np.ndarray) -> float:
        """Distance of the pre-activations to a kink (``fnn.testing``): inf, smooth cells."""
        return np.inf

    def init(self, key: int | Key) -> tuple[RecurrentParams, tuple]:
        """Inputs: key (an int seed or an fnn.Key). Returns ``(RecurrentParams, ())``: W_ih,
        W_hh, b_ih, b_hh in ``dtype`` from keys split off ``key`` in that order, the weights
        from ``w_init`` and the biases from ``b_init``, each None = U(±1/sqrt(hidden_size)),
        PyTorch's rule."""
        keys = split_key(key, 4)
        params = {name: init_param(self.w_init if name[0] == "W" else self.b_init, k, shape,
                                   self.dtype, self.hidden_size)
                  for k, (name, shape) in zip(keys, self._shapes().items())}
        return RecurrentParams(**params), ()

    # --- the skeleton ---------------------------------------------------------------------

    def _weights(self, params: RecurrentParams, like: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(cast_like(getattr(params, k), like) for k in ("W_ih", "W_hh", "b_ih", "b_hh"))

    def forward(self, params: RecurrentParams, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, RecurrentCache]:
        """Inputs: params (:class:`RecurrentParams`), state ``()``, x (N, T, input_size).

        Returns y (N, T, hidden_size) in x's dtype, y[:, t] the hidden state after step t, and
        a :class:`RecurrentCache` (time-major input and hidden states, the cell's per-step
        arrays)."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", "T", self.input_size))
        W_ih, W_hh, b_ih, b_hh = self._weights(params, x)
        half = np.repeat(np.where(self.sigmoid_gates, 0.5, 1.0), self.hidden_size
                         ).astype(x.dtype)
        if any(self.sigmoid_gates):  # pre-activations of the sigmoid gates come out halved
            W_ih, W_hh, b_ih, b_hh = (W_ih * half[:, None], W_hh * half[:, None], b_ih * half,
                                      b_hh * half)
        n, t_len, _ = x.shape
        xs = _time_major(x, self.reverse)
        xw = xs.reshape(t_len * n, self.input_size) @ W_ih.T
        xw += b_ih + b_hh if self.bias_hh_in_input else b_ih
        xw = xw.reshape(t_len, n, W_ih.shape[0])
        hs = np.zeros((t_len + 1, n, self.hidden_size), x.dtype)
        saved = self._buffers(t_len, n, x.dtype)
        W_hh_T, hw = W_hh.T, np.empty((n, W_hh.shape[0]), x.dtype)
        for t in range(t_len):
            np.matmul(hs[t], W_hh_T, out=hw)
            self._step(t, xw[t], hw, (b_hh, half, 1 - half), hs, saved)
        y = hs[:0:-1] if self.reverse else hs[1:]
        # a copy always: for N = 1 or T = 1 the swap is already contiguous, and a view would let
        # a write to y change the cached hidden states (and so the next backward)
        return np.array(y.swapaxes(0, 1), order="C"), RecurrentCache(xs, hs, saved, state)

    def backward(self, params: RecurrentParams, cache: RecurrentCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, RecurrentParams]:
        """Inputs: params, the forward's cache, dy (N, T, hidden_size).

        Returns dx (N, T, input_size) in x's dtype and dparams (:class:`RecurrentParams` in
        the params' dtypes), by backpropagation through time."""
        return self._backward(params, cache, dy, need_dx=True)

    def backward_params(self, params: RecurrentParams, cache: RecurrentCache, dy: np.ndarray
                        ) -> RecurrentParams:
        """``backward(params, cache, dy)[1]`` without computing dx (one matrix product
        fewer)."""
        return self._backward(params, cache, dy, need_dx=False)[1]

    def _backward(self, params: RecurrentParams, cache: RecurrentCache, dy: np.ndarray,
                  need_dx: bool) -> tuple[np.ndarray | None, RecurrentParams]:
        self.check_params(params)
        xs, hs = cache.x, cache.h
        t_len, n, _ = xs.shape
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (n, t_len, self.hidden_size), "gradient")
        W_ih, W_hh, _, _ = self._weights(params, xs)
        dys = _time_major(dy.astype(xs.dtype, copy=False), self.reverse)
        dxw = np.empty((t_len, n, W_hh.shape[0]), xs.dtype)  # d(pre-activations), input part
        dhw = dxw if self.bias_hh_in_input else np.empty_like(dxw)  # the recurrent part
        prepared = self._prepare(hs, cache.saved)
        dh_next = np.zeros((n, self.hidden_size), xs.dtype)
        carry = None
        for t in reversed(range(t_len)):
            dh = dys[t] + dh_next
            carry, dh_direct = self._step_back(t, dh, carry, hs, cache.saved, prepared,
                                               dxw[t], dhw[t])
            dh_next = dhw[t] @ W_hh
            if dh_direct is not None:
                dh_next += dh_direct
        rows, gh = t_len * n, W_hh.shape[0]  # (an empty batch or sequence has no -1 to infer)
        dxw2, dhw2 = dxw.reshape(rows, gh), dhw.reshape(rows, gh)
        dx = None
        if need_dx:
            dxs = (dxw2 @ W_ih).reshape(t_len, n, self.input_size)
            dx = np.ascontiguousarray((dxs[::-1] if self.reverse else dxs).swapaxes(0, 1))
        grads = RecurrentParams(W_ih=dxw2.T @ xs.reshape(rows, self.input_size),
                                W_hh=dhw2.T @ hs[:-1].reshape(rows, self.hidden_size),
                                b_ih=dxw2.sum(axis=0), b_hh=dhw2.sum(axis=0))
        return dx, RecurrentParams(**{f.name: cast_like(getattr(grads, f.name),
                                                         getattr(params, f.name))
                                      for f in attrs.fields(RecurrentParams)})

    # --- the cell (defaults: nothing saved beyond the hidden states) -----------------------

    def _buffers(self, t_len: int, n: int, dtype: Any) -> tuple:
        return ()

    def _step(self, t: int, xw: np.ndarray, hw: np.ndarray, consts: tuple,
              hs: np.ndarray, saved: tuple) -> None:
        """Write h_t = hs[t + 1] (and the saved arrays at t) from the input part ``xw`` and the
        recurrent product ``hw`` = h_(t-1) W_hhᵀ (scratch); ``consts`` = (b_hh, half, 1 - half):
        sigmoid(a) = tanh(a_halved)·half + (1 - half) on the sigmoid blocks."""
        raise NotImplementedError

    def _prepare(self, hs: np.ndarray, saved: tuple) -> Any:
        return None

    def _step_back(self, t: int, dh: np.ndarray, carry: Any, hs: np.ndarray, saved: tuple,
                   prepared: Any, dxw: np.ndarray, dhw: np.ndarray) -> tuple[Any, Any]:
        raise NotImplementedError



@spec
class RNN(Recurrent):
    """Elman RNN, as ``torch.nn.RNN(input_size, hidden_size, nonlinearity, batch_first=True)``:

        h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh),   h_0 = 0,   act = tanh or relu.

    Inputs x (N, T, input_size) -> y (N, T, hidden_size), y[:, t] = h_t (from the right with
    ``reverse=True``). Params :class:`RecurrentParams` W_ih (H, F), W_hh (H, H), b_ih, b_hh (H,).
    Backward: d(pre-activation) = dh_t·act'(·) with act' = 1 − h² (tanh) or [h > 0] (relu);
    dh_{t-1} = d(pre) W_hh. The cache holds the time-major x and hidden states.
    """

    nonlinearity: str = attrs.field(default="tanh", validator=one_of("tanh", "relu"))

    def kink_distance(self, params: RecurrentParams, state: Any, x: np.ndarray) -> float:
        """For "relu": the smallest |pre-activation| over all steps (the kink of max(·, 0)) on
        this input; inf for "tanh"."""
        if self.nonlinearity == "tanh":
            return np.inf
        _, c = self.forward(params, state, x)
        pre = c.x @ params.W_ih.T + params.b_ih + params.b_hh + c.h[:-1] @ params.W_hh.T
        return float(np.abs(pre).min(initial=np.inf))

    def _step(self, t, xw, hw, consts, hs, saved):
        hw += xw
        if self.nonlinearity == "tanh":
            np.tanh(hw, out=hs[t + 1])
        else:
            np.maximum(hw, 0, out=hs[t + 1])

    def _prepare(self, hs, saved):
        h = hs[1:]
        return 1 - h * h if self.nonlinearity == "tanh" else (h > 0).astype(h.dtype)

    def _step_back(self, t, dh, carry, hs, saved, prepared, dxw, dhw):
        np.multiply(dh, prepared[t], out=dxw)
        return None, None


@spec
class LSTM(Recurrent):
    """Long short-term memory, as ``torch.nn.LSTM(input_size, hidden_size, batch_first=True)``:

        [i, f, g, o] = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh   (four blocks of H columns)
        i, f, o = sigmoid(·);  g = tanh(·)
        c_t = f·c_{t-1} + i·g;  h_t = o·tanh(c_t);   h_0 = c_0 = 0.

    Inputs x (N, T, input_size) -> y (N, T, hidden_size), y[:, t] = h_t (from the right with
    ``reverse=True``). Params :class:`RecurrentParams` W_ih (4H, F), W_hh (4H, H), b_ih, b_hh
    (4H,), gate order i, f, g, o (PyTorch's). The cache holds the time-major x, the hidden
    states and, per step, the gate activations, c_t and tanh(c_t). Backward:
    dc_t = dh_t·o·(1 − tanh²c_t) + dc_{t+1}·f_{t+1}; di = dc·g, df = dc·c_{t-1}, dg = dc·i,
    do = dh·tanh(c_t), each times its activation's derivative.
    """

    gates: ClassVar[int] = 4
    sigmoid_gates: ClassVar[tuple[bool, ...]] = (True, True, False, True)

    def _buffers(self, t_len, n, dtype):
        h = self.hidden_size
        cs = np.zeros((t_len + 1, n, h), dtype)
        return np.empty((t_len, n, 4 * h), dtype), cs, np.empty((t_len, n, h), dtype)

    def _step(self, t, xw, hw, consts, hs, saved):
        acts, cs, tanh_c = saved
        _, half, offset = consts
        h, a = self.hidden_size, acts[t]
        hw += xw
        np.tanh(hw, out=a)
        a *= half
        a += offset
        i, f, g, o = a[:, :h], a[:, h:2 * h], a[:, 2 * h:3 * h], a[:, 3 * h:]
        c = cs[t + 1]
        np.multiply(f, cs[t], out=c)
        c += i * g
        np.tanh(c, out=tanh_c[t])
        np.multiply(o, tanh_c[t], out=hs[t + 1])

    def _prepare(self, hs, saved):
        """For all steps at once: P[t, :, k] = d(pre-activation of gate k)/dc_t for i, f, g
        and /dh_t for o, i.e. (g·i', c_(t-1)·f', i·g', tanh(c_t)·o'); and dc_t/dh_t =
        o·tanh'(c_t)."""
        acts, cs, tanh_c = saved
        t_len, n, _ = acts.shape
        i, f, g, o = np.moveaxis(acts.reshape(t_len, n, 4, self.hidden_size), 2, 0)
        p = np.empty((t_len, n, 4, self.hidden_size), acts.dtype)
        np.multiply(g, i * (1 - i), out=p[:, :, 0])
        np.multiply(cs[:-1], f * (1 - f), out=p[:, :, 1])
        np.multiply(i, 1 - g * g, out=p[:, :, 2])
        np.multiply(tanh_c, o * (1 - o), out=p[:, :, 3])
        return p, o * (1 - tanh_c * tanh_c)

    def _step_back(self, t, dh, carry, hs, saved, prepared, dxw, dhw):
        p, dc_dh = prepared
        h = self.hidden_size
        dc = dh * dc_dh[t]
        if carry is not None:
            dc += carry
        d4 = dxw.reshape(len(dh), 4, h)
        np.multiply(dc[:, None], p[t, :, :3], out=d4[:, :3])
        np.multiply(dh, p[t, :, 3], out=d4[:, 3])
        return dc * saved[0][t, :, h:2 * h], None


@spec
class GRU(Recurrent):
    """Gated recurrent unit, as ``torch.nn.GRU(input_size, hidden_size, batch_first=True)``:

        r = sigmoid(x_t W_irᵀ + b_ir + h_{t-1} W_hrᵀ + b_hr)
        z = sigmoid(x_t W_izᵀ + b_iz + h_{t-1} W_hzᵀ + b_hz)
        n = tanh(x_t W_inᵀ + b_in + r·(h_{t-1} W_hnᵀ + b_hn))
        h_t = (1 − z)·n + z·h_{t-1},   h_0 = 0.

    Inputs x (N, T, input_size) -> y (N, T, hidden_size), y[:, t] = h_t (from the right with
    ``reverse=True``). Params :class:`RecurrentParams` W_ih (3H, F), W_hh (3H, H), b_ih, b_hh
    (3H,), gate order r, z, n (PyTorch's). The cache holds the time-major x, the hidden states
    and, per step, r, z, n and h_{t-1} W_hnᵀ + b_hn. Backward: dn = dh·(1 − z),
    dz = dh·(h_{t-1} − n), dr = dn·(1 − n²)·(h_{t-1} W_hnᵀ + b_hn); dh_{t-1} gets dh·z plus the
    recurrent product, in which the n block is scaled by r.
    """

    gates: ClassVar[int] = 3
    bias_hh_in_input: ClassVar[bool] = False
    sigmoid_gates: ClassVar[tuple[bool, ...]] = (True, True, False)

    def _buffers(self, t_len, n, dtype):
        h = self.hidden_size
        return np.empty((t_len, n, 3 * h), dtype), np.empty((t_len, n, h), dtype)

    def _step(self, t, xw, hw, consts, hs, saved):
        acts, hn = saved
        h, a = self.hidden_size, acts[t]
        hw += consts[0]
        hn[t] = hw[:, 2 * h:]
        rz = a[:, :2 * h]
        np.add(xw[:, :2 * h], hw[:, :2 * h], out=rz)
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        r, z, n = a[:, :h], a[:, h:2 * h], a[:, 2 * h:]
        np.multiply(r, hn[t], out=n)
        n += xw[:, 2 * h:]
        np.tanh(n, out=n)
        h_prev, h_new = hs[t], hs[t + 1]
        np.subtract(h_prev, n, out=h_new)
        h_new *= z
        h_new += n

    def _prepare(self, hs, saved):
        """For all steps at once: Q[t, :, 0] = dr_pre/dn_pre = (h W_hnᵀ + b_hn)·r',
        Q[t, :, 1] = dz_pre/dh_t = (h_(t-1) − n)·z', Q[t, :, 2] = dn_pre/dh_t = (1 − z)·n'."""
        acts, hn = saved
        t_len, n_, _ = acts.shape
        r, z, n = np.moveaxis(acts.reshape(t_len, n_, 3, self.hidden_size), 2, 0)
        q = np.empty((t_len, n_, 3, self.hidden_size), acts.dtype)
        np.multiply(hn, r * (1 - r), out=q[:, :, 0])
        np.multiply(hs[:-1] - n, z * (1 - z), out=q[:, :, 1])
        np.multiply(1 - z, 1 - n * n, out=q[:, :, 2])
        return q

    def _step_back(self, t, dh, carry, hs, saved, prepared, dxw, dhw):
        h = self.hidden_size
        r, z = saved[0][t, :, :h], saved[0][t, :, h:2 * h]
        d3 = dxw.reshape(len(dh), 3, h)
        np.multiply(dh[:, None], prepared[t, :, 1:], out=d3[:, 1:])  # dz_pre, dn_pre
        np.multiply(d3[:, 2], prepared[t, :, 0], out=d3[:, 0])  # dr_pre
        dhw[:, :2 * h] = dxw[:, :2 * h]
        np.multiply(d3[:, 2], r, out=dhw[:, 2 * h:])
        return None, dh * z
