"""fnn: neural networks on numpy as pure functions over immutable records.

Every layer is a frozen spec with ``init(key) -> (params, state)``,
``forward(params, state, x) -> (y, cache)`` and ``backward(params, cache, dy) -> (dx, dparams)``.
See docs/contract.md.
"""

from . import data, init, io, testing, train, tree
from .activations import (
    ELU,
    GELU,
    Identity,
    LeakyReLU,
    LogSoftMax,
    ReLU,
    Sigmoid,
    SoftMax,
    SoftPlus,
    Tanh,
)
from .conv import Conv2d
from .core import Key, Layer, as_key, generator, split_key
from .dropout import Dropout
from .io import Checkpoint, CheckpointError, load, save
from .linear import ChannelwiseScaling, Linear
from .losses import ClassNLLCriterion, ClassNLLCriterionUnstable, MSECriterion
from .normalization import BatchNorm2d, BatchNormalization, LayerNorm
from .optim import Adam, SGDMomentum
from .pooling import MaxPool2d
from .sequential import Residual, Sequential
from .shape import Flatten
from .train import fit
from .tree import eval_mode, train_mode

__version__ = "0.1.0"

__all__ = [
    "Layer", "Key", "as_key", "split_key", "generator", "tree", "testing", "init",
    "Linear", "SoftMax", "LogSoftMax", "BatchNormalization", "ChannelwiseScaling", "Dropout",
    "ReLU", "LeakyReLU", "ELU", "SoftPlus", "Conv2d", "MaxPool2d", "Flatten", "Sequential",
    "MSECriterion", "ClassNLLCriterionUnstable", "ClassNLLCriterion",
    "SGDMomentum", "Adam", "train_mode", "eval_mode",
    "data", "io", "train", "fit", "save", "load", "Checkpoint", "CheckpointError",
    "Tanh", "Sigmoid", "GELU", "Identity", "BatchNorm2d", "LayerNorm", "Residual",
]
