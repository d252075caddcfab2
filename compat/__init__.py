"""compat: the classic Torch7-style stateful API (``Module``, ``Sequential``, ``Linear``, ...,
``sgd_momentum``, ``adam_optimizer``) as a drop-in, computed by fnn.

    from compat import *

gives every name of the classic homework modules with the same attributes and behaviour.
See docs/compat.md for the mapping to fnn and the semantics.
"""

from .criteria import ClassNLLCriterion, ClassNLLCriterionUnstable, MSECriterion
from .layers import (
    ELU,
    BatchNormalization,
    ChannelwiseScaling,
    Conv2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    LogSoftMax,
    MaxPool2d,
    ReLU,
    SoftMax,
    SoftPlus,
)
from .module import Criterion, Module, Sequential
from .optim import adam_optimizer, sgd_momentum

__all__ = [
    "Module", "Sequential", "Criterion", "Linear", "SoftMax", "LogSoftMax", "BatchNormalization",
    "ChannelwiseScaling", "Dropout", "ReLU", "LeakyReLU", "ELU", "SoftPlus", "Conv2d",
    "MaxPool2d", "Flatten", "MSECriterion", "ClassNLLCriterionUnstable", "ClassNLLCriterion",
    "sgd_momentum", "adam_optimizer",
]
