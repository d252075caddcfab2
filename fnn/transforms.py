"""The optimizer base (:class:`Optimizer`) and the gradient transformations: the steps an
optimizer applies before its per-leaf rule.

A transformation is a frozen record called as ``transform(params, grads, learning_rate) ->
(params, grads)`` (pure: new trees). Compose them in front of any optimizer with
:func:`fnn.optim.chain`, as optax's ``chain``::

    opt = fnn.optim.chain(ClipByGlobalNorm(1.0), AddDecayedWeights(1e-4), fnn.SGD(0.1))

The optimizers' keyword shorthands build the same records: ``max_grad_norm=c`` is
``ClipByGlobalNorm(c)``; ``weight_decay=d`` with ``weight_decay_mask=m`` is
``AddDecayedWeights(d, m)`` for SGD and RMSprop (L2, added to the gradient) and
``DecoupledWeightDecay(d, m)`` for AdamW and Lion (the weights shrink).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Any, ClassVar

import attrs
import numpy as np

from . import tree
from .core import FLOAT_DTYPES, in_range, positive_real, real_float, spec

__all__ = ["Optimizer", "Chain", "chain", "clip_by_global_norm", "rank_at_least_2",
           "decay_mask", "ClipByGlobalNorm", "AddDecayedWeights", "DecoupledWeightDecay"]


def clip_by_global_norm(grads: Any, max_norm: float) -> tuple[Any, float]:
    """Scale a gradient tree so that its global 2-norm is at most ``max_norm``, as
    torch.nn.utils.clip_grad_norm_: norm = sqrt(Σ over all array leaves of Σ g²);
    every leaf times min(1, max_norm / (norm + 1e-6)).

    Returns the new tree (new arrays, each in its own dtype) and the norm before clipping
    (a Python float; nan or inf if a gradient is not finite, and then so are the results).
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) \
            or not 0 < max_norm < np.inf:
        raise ValueError(f"clip_by_global_norm: max_norm must be a positive finite number, "
                         f"got {max_norm!r}")
    for path, g in tree.items(grads):
        if not isinstance(g, np.ndarray):  # a number would be left out of the norm, unclipped
            raise TypeError(f"clip_by_global_norm: grads{tree.path_str(path)} is "
                            f"{_describe_node(g)}; gradients are arrays")
        if g.dtype.kind not in "fiu":
            raise TypeError(f"clip_by_global_norm: grads{tree.path_str(path)} has dtype "
                            f"{g.dtype}; gradients are real numbers")
    norm = math.hypot(*(float(np.linalg.norm(g.reshape(-1))) for g in tree.leaves(grads)
                        if isinstance(g, np.ndarray)))
    coef = min(float(max_norm) / (norm + 1e-6), 1.0)
    return tree.map(lambda g: np.asarray(g * coef), grads), norm  # 0-d stays an array


def rank_at_least_2(path: tuple, leaf: Any) -> bool:
    """A weight-decay mask predicate: decay weight matrices and kernels (rank >= 2), not biases
    or normalisation parameters (rank 1)."""
    return np.ndim(leaf) >= 2


def decay_mask(mask: Any, params: Any) -> Any:
    """The weight-decay mask as a tree of bools like ``params``: all True for None; for a
    callable, ``mask(path, leaf)`` at every leaf (see :func:`fnn.tree.items`); a tree of bools
    is checked against params' structure and returned."""
    if mask is None:
        return tree.map(lambda _: True, params)
    if callable(mask):
        flags = [(path, mask(path, leaf)) for path, leaf in tree.items(params)]
    else:
        found = tree.first_difference(mask, params)
        if found is not None:
            raise ValueError(f"weight_decay_mask: a tree of bools must have the structure of "
                             f"the params; at mask{tree.path_str(found[0])} it has "
                             f"{_describe_node(found[1])} where params has "
                             f"{_describe_node(found[2])}")
        flags = tree.items(mask)
    for path, flag in flags:
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"weight_decay_mask: the flag for params{tree.path_str(path)} must "
                            f"be True or False, got {flag!r}")
    return tree.unflatten(params, [bool(flag) for _, flag in flags])


def _mask_validator(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not (value is None or callable(value) or not tree.is_leaf(value)):
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be None, a "
                         f"predicate (path, leaf) -> bool or a tree of bools like the params, "
                         f"got {value!r}")


def mask_field(**kw: Any) -> Any:
    """A weight-decay mask field (see :func:`decay_mask`), default None (decay every leaf)."""
    return attrs.field(default=None, validator=_mask_validator, **kw)


def nonneg_field(default: float | None = None) -> Any:
    """A hyperparameter field holding a finite real >= 0 (required, or with a default)."""
    kw = {} if default is None else {"default": default}
    return attrs.field(**kw, converter=real_float, validator=in_range(0.0, np.inf))


@spec
class ClipByGlobalNorm:
    """grads ← grads · min(1, max_norm / (norm + 1e-6)), norm the global 2-norm of all
    gradient leaves (see :func:`clip_by_global_norm`); params unchanged."""

    max_norm: float = attrs.field(converter=real_float, validator=positive_real)

    def __call__(self, params: Any, grads: Any, learning_rate: float) -> tuple[Any, Any]:
        return params, clip_by_global_norm(grads, self.max_norm)[0]


@spec
class AddDecayedWeights:
    """L2 weight decay (coupled): g ← g + weight_decay·w at every leaf the mask allows (see
    :func:`decay_mask`), g first cast to w's dtype; params unchanged. torch's SGD and RMSprop
    ``weight_decay``."""

    weight_decay: float = nonneg_field()
    mask: Any = mask_field()

    def __call__(self, params: Any, grads: Any, learning_rate: float) -> tuple[Any, Any]:
        wd = self.weight_decay

        def leaf(g: np.ndarray, w: np.ndarray, decay: bool) -> np.ndarray:
            return g.astype(w.dtype, copy=False) + wd * w if decay else g

        return params, tree.map(leaf, grads, params, decay_mask(self.mask, params))


@spec
class DecoupledWeightDecay:
    """Decoupled weight decay (Loshchilov & Hutter): w ← w·(1 − learning_rate·weight_decay) at
    every leaf the mask allows, before the optimizer's rule; grads unchanged. torch's AdamW
    ``weight_decay``."""

    weight_decay: float = nonneg_field()
    mask: Any = mask_field()

    def __call__(self, params: Any, grads: Any, learning_rate: float) -> tuple[Any, Any]:
        shrink = 1 - learning_rate * self.weight_decay
        return tree.map(lambda w, decay: w * shrink if decay else w, params,
                        decay_mask(self.mask, params)), grads


# --- the optimizer base ---------------------------------------------------------------------

def _describe_node(node: Any) -> str:
    if node is None:
        return "None"
    if isinstance(node, np.ndarray):
        return f"an array of shape {node.shape} and dtype {node.dtype}"
    if tree.is_leaf(node):
        return f"a {type(node).__name__}"
    return f"a {type(node).__name__} of {len(tree.children(node))}"


def _fits(w: Any, x: Any) -> bool:
    """A slot or gradient leaf ``x`` fits the param leaf ``w``: both arrays, same shape, w
    float32 or float64 and x real."""
    return isinstance(w, np.ndarray) and isinstance(x, np.ndarray) and x.shape == w.shape \
        and w.dtype in FLOAT_DTYPES and x.dtype.kind in "fiu"


class Optimizer:
    """Base of fnn's optimizers, and the extension point for new ones.

    A subclass is a frozen attrs record of hyperparameters (``learning_rate``: a float, or a
    schedule where the state has a ``learning_rate`` field) that defines:

    - ``State``: its state record. Fields ``t`` (updates taken) and ``learning_rate`` (the
      next update's rate), if declared, are kept by the base; every field named by ``slots()``
      is a tree like params (zeros at ``init``);
    - ``slots()``: the names of the slot trees in use (default none);
    - ``rule(w, g, slots, lr, t, out=None) -> (new w, *new slots)``: the update of one array
      leaf, with g already transformed and cast to w's dtype, lr this update's learning rate
      and t its number (1 for the first update). ``out``, when not None, is an array of w's
      shape and dtype to write the new w into (a donated gradient, possibly g itself: read g
      before writing it); a rule without that keyword always makes a new w;
    - optionally ``transforms()``: the gradient transformations to apply first (default
      none; see :mod:`fnn.transforms`).

    ``update`` first checks, before computing anything, that grads and every slot tree have
    the params' structure and each leaf its param's shape (and slots its dtype): a ValueError
    (TypeError for a wrong type) names the optimizer, the leaf's path and both shapes.

    ``update(..., donate=True)`` hands the gradient arrays over (JAX's ``donate``): the new
    params may be written into them, so that a step allocates no new param arrays. Only on
    request (``fnn.train_step`` donates the gradients it made itself), and only into a
    gradient leaf that owns its memory, is writeable, has its param's shape and dtype and
    shares no memory with the param or the state; the caller must not use grads afterwards.
    """

    State: ClassVar[type]

    def slots(self) -> tuple[str, ...]:
        """The names of the state's slot trees in use."""
        return ()

    def transforms(self) -> tuple:
        """The gradient transformations applied before the rule (from the shorthand fields)."""
        return ()

    def rule(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
             out: np.ndarray | None = None) -> tuple:
        """``(new w, *new slots)`` for one array leaf (see the class docstring): w, g and the
        slots all of w's shape and dtype; new arrays (the new w in ``out`` if given), the
        inputs untouched but ``out``."""
        raise NotImplementedError(f"{type(self).__name__} does not define rule")

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of the update after ``step`` updates: the float, or the schedule's
        value at ``step``; a ValueError if a schedule gives a negative, NaN or infinite rate."""
        lr = self.learning_rate
        if not callable(lr):
            return lr
        value = lr(step)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not 0 <= value < math.inf:
            raise ValueError(f"{type(self).__name__}: the learning-rate schedule {lr!r} gave "
                             f"{value!r} at step {step}; a rate must be a finite number >= 0")
        return float(value)

    def _fields(self) -> dict:
        return attrs.fields_dict(self.State)

    def init(self, params: Any) -> Any:
        """The state before the first update: slots of zeros like ``params``, t = 0."""
        for path, w in tree.items(params):
            if not (isinstance(w, np.ndarray) and w.dtype in FLOAT_DTYPES):
                raise TypeError(f"{type(self).__name__}.init: params{tree.path_str(path)} is "
                                f"{_describe_node(w)}; params must be float32 or float64 arrays")
        kw = {name: tree.map(np.zeros_like, params) for name in self.slots()}
        return self.State(**kw, **self._counters(0))

    def _counters(self, t: int) -> dict:
        fields = self._fields()
        return {**({"t": t} if "t" in fields else {}),
                **({"learning_rate": self.learning_rate_at(t)} if "learning_rate" in fields
                   else {})}

    def check(self, params: Any, grads: Any, state: Any) -> None:
        """Raise unless ``grads`` and ``state`` fit ``params`` (see the class docstring)."""
        name = type(self).__name__
        if not isinstance(state, self.State):
            raise TypeError(f"{name}.update: state must be the {self.State.__name__} that "
                            f"{name}.init returns, got {type(state).__name__} (the state of "
                            f"another optimizer?)")
        t = getattr(state, "t", 0)
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            raise ValueError(f"{name}.update: state.t must be a non-negative integer, got {t!r}")
        trees = [("grads", grads, lambda x, w: _fits(w, x) and x.dtype in FLOAT_DTYPES)] + [
            (f"state.{s}", getattr(state, s),
             lambda x, w: _fits(w, x) and x.dtype == w.dtype) for s in self.slots()]
        for what, other, same in trees:
            found = tree.first_difference(other, params, same)
            if found is None:
                continue
            path, got, want = found
            where = tree.path_str(path)
            if isinstance(want, np.ndarray) and want.dtype not in FLOAT_DTYPES:
                raise TypeError(f"{name}.update: params{where} is {_describe_node(want)}; "
                                f"params must be float32 or float64 arrays")
            if isinstance(got, np.ndarray) and isinstance(want, np.ndarray) \
                    and got.shape == want.shape:
                raise TypeError(f"{name}.update: {what}{where} has dtype {got.dtype}, the param "
                                f"has dtype {want.dtype}")
            if isinstance(got, np.ndarray) and isinstance(want, np.ndarray):
                raise ValueError(f"{name}.update: {what}{where} has shape {got.shape}, the "
                                 f"param params{where} has shape {want.shape}")
            raise ValueError(f"{name}.update: {what}{where} is {_describe_node(got)} where "
                             f"params{where} is {_describe_node(want)} (a tree like params "
                             f"is expected)")

    def update(self, params: Any, grads: Any, state: Any, *, donate: bool = False
               ) -> tuple[Any, Any]:
        """``(new params, new state)`` after one step; nothing is mutated (with
        ``donate=True``, the new params may be written into the grads' arrays: see the class
        docstring)."""
        self.check(params, grads, state)
        return self._update(params, grads, state, (), donate)

    def _update(self, params: Any, grads: Any, state: Any, before: tuple, donate: bool = False
                ) -> tuple[Any, Any]:
        """The update, unchecked, after the transformations ``before`` (a Chain's)."""
        step = getattr(state, "t", 0)
        lr, names, given = self.learning_rate_at(step), self.slots(), params
        for i, transform in enumerate((*before, *self.transforms())):
            params, grads = transform(params, grads, lr)
            if i < len(before):  # a transformation of the user's: no broadcasting either
                _check_transformed(self, transform, params, grads)

        slot_trees = [getattr(state, n) for n in names]
        donated = (_donatable(grads, (given, params), slot_trees)
                   if donate and _takes_out(type(self).rule) else set())

        def leaf(w: np.ndarray, g: np.ndarray, *slots: np.ndarray) -> tuple:
            extra = {"out": g} if id(g) in donated and g.dtype == w.dtype else {}
            # np.asarray: a 0-d param stays a 0-d array (w - lr * g is a numpy scalar)
            return tuple(np.asarray(a) for a in self.rule(w, g.astype(w.dtype, copy=False),
                                                          slots, lr, step + 1, **extra))

        new_params, *slots = tree.map_multi(leaf, 1 + len(names), params, grads, *slot_trees)
        return new_params, self.State(**dict(zip(names, slots)), **self._counters(step + 1))


@functools.cache
def _takes_out(rule: Any) -> bool:
    """A rule (the function) with an ``out`` keyword: it can write the new w there."""
    return "out" in inspect.signature(rule).parameters


def _donatable(grads: Any, params: Any, slot_trees: list) -> set[int]:
    """The ids of the donated gradient leaves that may take a new w: ndarrays owning their
    memory, writeable, C-contiguous, each once in the tree, sharing memory with no param leaf
    (those given, and those after the transformations) or slot leaf (so that writing one
    changes nothing else that the update reads or returns)."""
    leaves = [g for g in tree.leaves(grads) if isinstance(g, np.ndarray)]
    counts: dict[int, int] = {}
    for g in leaves:
        counts[id(g)] = counts.get(id(g), 0) + 1
    # A leaf that owns its memory shares it only with arrays whose chain of bases ends at it:
    # collect those owners once (not a may_share_memory per pair: quadratic in the leaves),
    # and keep the rare leaves whose memory comes from another object for a direct check.
    owners: set[int] = set()
    foreign = []
    for a in (a for t in (params, *slot_trees) for a in tree.leaves(t)):
        if isinstance(a, np.ndarray):
            owner = a
            while isinstance(owner.base, np.ndarray):
                owner = owner.base
            if owner.base is None:
                owners.add(id(owner))
            else:
                foreign.append(a)
    return {id(g) for g in leaves
            if counts[id(g)] == 1 and g.flags.owndata and g.flags.writeable
            and g.flags.c_contiguous and id(g) not in owners
            and not any(np.may_share_memory(g, a) for a in foreign)}


def _check_transformed(opt: Optimizer, transform: Any, params: Any, grads: Any) -> None:
    found = tree.first_difference(grads, params, lambda x, w: _fits(w, x))
    if found is not None:
        path, got, want = found
        where = tree.path_str(path)
        raise ValueError(f"{type(opt).__name__}.update: after the transformation {transform!r}, "
                         f"grads{where} is {_describe_node(got)} where params{where} is "
                         f"{_describe_node(want)}; a transformation must keep the shapes")


def _transforms_validator(instance: Any, attribute: attrs.Attribute, value: tuple) -> None:
    for t in value:
        if not callable(t) or isinstance(t, (Optimizer, Chain)):
            raise ValueError(f"Chain: {t!r} is not a gradient transformation "
                             f"(params, grads, learning_rate) -> (params, grads)")


def _optimizer_validator(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, Optimizer):
        raise ValueError(f"Chain: the last part must be an fnn.optim.Optimizer, got {value!r}")


@spec
class Chain:
    """Gradient transformations, then an optimizer: ``update`` applies each transform in order
    (see :mod:`fnn.transforms`) and then ``optimizer``'s own transforms and rule. The state is
    the optimizer's. Build one with :func:`chain`."""

    transforms: tuple = attrs.field(converter=tuple, validator=_transforms_validator)
    optimizer: Optimizer = attrs.field(validator=_optimizer_validator)

    def init(self, params: Any) -> Any:
        """The optimizer's initial state."""
        return self.optimizer.init(params)

    def learning_rate_at(self, step: int) -> float:
        """The optimizer's learning rate after ``step`` updates."""
        return self.optimizer.learning_rate_at(step)

    def update(self, params: Any, grads: Any, state: Any, *, donate: bool = False
               ) -> tuple[Any, Any]:
        """``(new params, new state)``: the optimizer's checks, then the transformations in
        order, then the optimizer's own transformations and rule (``donate`` as in
        :meth:`Optimizer.update`)."""
        self.optimizer.check(params, grads, state)
        return self.optimizer._update(params, grads, state, self.transforms, donate)


def chain(*parts: Any) -> Chain:
    """``chain(transform, ..., optimizer)``: the transforms applied in order before the
    optimizer, e.g. ``chain(ClipByGlobalNorm(1.0), AddDecayedWeights(1e-4), SGD(0.1))``."""
    if not parts:
        raise ValueError("Chain: chain() needs at least an optimizer")
    return Chain(parts[:-1], parts[-1])
