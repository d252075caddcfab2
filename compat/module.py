"""The classic base classes: Module, Criterion, Sequential (Torch7 template methods).

A classic module is stateful: ``forward(input)`` stores and returns ``output``;
``backward(input, gradOutput)`` stores and returns ``gradInput`` and *accumulates* the parameter
gradients. These classes hold no math; the built-in layers (compat.layers) call fnn.
"""

from __future__ import annotations

from typing import Any

from fnn.sequential import _note

__all__ = ["Module", "Criterion", "Sequential"]


class Module:
    """A black box with ``output = forward(input)`` and ``gradInput = backward(input, gradOutput)``.

    Subclass it and override ``updateOutput`` / ``updateGradInput`` (and, with parameters,
    ``accGradParameters``, ``zeroGradParameters``, ``getParameters``, ``getGradParameters``).
    ``backward`` is ``updateGradInput`` then ``accGradParameters``; do not override ``forward``
    or ``backward``.
    """

    def __init__(self) -> None:
        self.output: Any = None
        self.gradInput: Any = None
        self.training = True

    def forward(self, input: Any) -> Any:
        """``updateOutput(input)``."""
        return self.updateOutput(input)

    def backward(self, input: Any, gradOutput: Any) -> Any:
        """``updateGradInput(input, gradOutput)``, then ``accGradParameters(input, gradOutput)``;
        returns ``gradInput``."""
        self.updateGradInput(input, gradOutput)
        self.accGradParameters(input, gradOutput)
        return self.gradInput

    def updateOutput(self, input: Any) -> Any:
        """Compute, store in ``self.output`` and return the output (override)."""
        return self.output

    def updateGradInput(self, input: Any, gradOutput: Any) -> Any:
        """Compute, store in ``self.gradInput`` and return d loss / d input (override)."""
        return self.gradInput

    def accGradParameters(self, input: Any, gradOutput: Any) -> None:
        """Add d loss / d parameters to the gradient attributes (override if parametric)."""

    def zeroGradParameters(self) -> None:
        """Reset the gradient attributes to zero (override if parametric)."""

    def getParameters(self) -> list:
        """The parameter arrays themselves (live: in-place updates change the module)."""
        return []

    def getGradParameters(self) -> list:
        """The gradient arrays, in the order of ``getParameters()``."""
        return []

    def train(self) -> None:
        """Training mode (Dropout drops, BatchNormalization uses batch statistics)."""
        self.training = True

    def evaluate(self) -> None:
        """Evaluation mode (Dropout is the identity, BatchNormalization uses moving statistics)."""
        self.training = False

    def __repr__(self) -> str:
        return "Module"


class Criterion:
    """A loss: ``output = forward(input, target)``, ``gradInput = backward(input, target)``.

    Subclass it and override ``updateOutput`` and ``updateGradInput``.
    """

    def __init__(self) -> None:
        self.output: Any = None
        self.gradInput: Any = None

    def forward(self, input: Any, target: Any) -> Any:
        """``updateOutput(input, target)``: the loss."""
        return self.updateOutput(input, target)

    def backward(self, input: Any, target: Any) -> Any:
        """``updateGradInput(input, target)``: d loss / d input."""
        return self.updateGradInput(input, target)

    def updateOutput(self, input: Any, target: Any) -> Any:
        """Compute, store in ``self.output`` and return the loss (override)."""
        return self.output

    def updateGradInput(self, input: Any, target: Any) -> Any:
        """Compute, store in ``self.gradInput`` and return the gradient (override)."""
        return self.gradInput

    def __repr__(self) -> str:
        return "Criterion"


class Sequential(Module):
    """Apply ``self.modules`` in order: y_0 = m_0(input), ..., output = m_{n-1}(y_{n-2}).

    ``backward`` runs the children's ``backward`` in reverse, each with the input it saw in the
    last forward (the first with the ``input`` given). ``getParameters()`` and
    ``getGradParameters()`` are lists with one list per child. If a child raises during
    ``forward``, the children's statistics are restored to what they were before the call
    (there is then no forward to run backward on), and the exception carries a note with the
    child's index and repr.
    """

    def __init__(self) -> None:
        super().__init__()
        self.modules: list[Module] = []
        self._inputs: list = []  # each child's input in the last forward
        self._grad_outputs: list | None = None  # each child's gradOutput, last updateGradInput

    def add(self, module: Module) -> None:
        """Append ``module``, a :class:`Module` (a TypeError now, not at the next forward)."""
        if not isinstance(module, Module):
            hint = (" (an fnn layer: use fnn.Sequential, or compat's module of the same name)"
                    if hasattr(module, "init") and hasattr(module, "forward") else "")
            raise TypeError(f"Sequential.add: expected a compat Module (Linear(3, 4), ReLU(), "
                            f"a Module subclass of your own), got {module!r}{hint}")
        self.modules.append(module)

    def __getitem__(self, i: Any) -> Any:
        return self.modules[i]

    def __len__(self) -> int:
        return len(self.modules)

    def updateOutput(self, input: Any) -> Any:
        inputs, snapshots = [], []
        self._inputs, self._grad_outputs = [], None  # let the last step's arrays go
        x = input
        for i, module in enumerate(self.modules):
            inputs.append(x)
            snapshots.append(_snapshot(module))
            try:
                x = module.forward(x)
            except Exception as err:
                for m, snapshot in zip(self.modules, snapshots):
                    _restore(m, snapshot)
                _note(err, i, module, "forward")
                raise
        self._inputs, self._grad_outputs = inputs, None
        self.output = x
        return x

    def _inputs_for(self, input: Any) -> list:
        if len(self._inputs) != len(self.modules):
            raise RuntimeError(f"Sequential: call forward before backward ({len(self.modules)} "
                               f"modules, {len(self._inputs)} inputs saved)")
        return [input, *self._inputs[1:]]

    def _reverse(self, input: Any, gradOutput: Any, step: str) -> Any:
        """Run ``module.<step>(input_i, g)`` from the last child to the first; returns the
        gradient w.r.t. ``input`` and records each child's gradOutput."""
        inputs = self._inputs_for(input)
        self._grad_outputs = None
        grads = [None] * len(self.modules)
        g = gradOutput
        for i in reversed(range(len(self.modules))):
            grads[i] = g
            try:
                g = getattr(self.modules[i], step)(inputs[i], g)
            except Exception as err:
                _note(err, i, self.modules[i], step)
                raise
        self._grad_outputs = grads
        self.gradInput = g
        return g

    def updateGradInput(self, input: Any, gradOutput: Any) -> Any:
        return self._reverse(input, gradOutput, "updateGradInput")

    def backward(self, input: Any, gradOutput: Any) -> Any:
        # Each child's backward computes its gradInput and its parameter gradients together.
        return self._reverse(input, gradOutput, "backward")

    def accGradParameters(self, input: Any, gradOutput: Any) -> None:
        grads = self._grad_outputs
        if grads is None or grads[-1] is not gradOutput:
            self.updateGradInput(input, gradOutput)
            grads = self._grad_outputs
        for module, x, g in zip(self.modules, self._inputs_for(input), grads):
            module.accGradParameters(x, g)

    def zeroGradParameters(self) -> None:
        for module in self.modules:
            module.zeroGradParameters()

    def getParameters(self) -> list:
        return [module.getParameters() for module in self.modules]

    def getGradParameters(self) -> list:
        return [module.getGradParameters() for module in self.modules]

    def train(self) -> None:
        self.training = True
        for module in self.modules:
            module.train()

    def evaluate(self) -> None:
        self.training = False
        for module in self.modules:
            module.evaluate()

    def __repr__(self) -> str:
        return "".join(f"{module}\n" for module in self.modules)


def _snapshot(module: Any) -> tuple[dict, list]:
    """What a failed forward must put back, for :func:`_restore`: the attributes named in
    ``module._statistics`` (the built-in layers name the ones their forward replaces), else
    all of them (a user's module; shallow), with the children's for a Sequential. Outputs and
    caches are not kept, so that their memory can be reused by the next forward."""
    if isinstance(module, Sequential):
        return {}, [_snapshot(m) for m in module.modules]
    names = getattr(module, "_statistics", None)
    if names is None:
        return dict(getattr(module, "__dict__", {})), []
    return {name: getattr(module, name) for name in names}, []


def _restore(module: Any, snapshot: tuple[dict, list]) -> None:
    own, children = snapshot
    for name, value in own.items():
        setattr(module, name, value)
    for child, child_snapshot in zip(getattr(module, "modules", ()), children):
        _restore(child, child_snapshot)
