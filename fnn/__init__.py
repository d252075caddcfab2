"""fnn: neural networks on numpy as pure functions over immutable records.

Every layer is a frozen spec with ``init(key) -> (params, state)``,
``forward(params, state, x) -> (y, cache)`` and ``backward(params, cache, dy) -> (dx, dparams)``.
See docs/contract.md.
"""

from . import data, init, io, memory, parallel, schedules, testing, train, transforms, tree
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
from .attention import MultiHeadAttention, TransformerEncoderLayer
from .class_losses import CrossEntropy, NLLLoss
from .conv import Conv1d, Conv2d
from .core import Key, Layer, as_key, generator, split_key
from .dropout import Dropout
from .embedding import Embedding, PositionalEmbedding, SinusoidalPositions
from .groupnorm import GroupNorm
from .io import Checkpoint, CheckpointError, load, save
from .linear import ChannelwiseScaling, Linear
from .losses import (
    L1,
    BCEWithLogits,
    ClassNLLCriterion,
    ClassNLLCriterionUnstable,
    Huber,
    MSECriterion,
)
from .normalization import BatchNorm2d, BatchNormalization, LayerNorm
from .optim import SGD, Adam, AdamW, Lion, RMSprop, SGDMomentum, clip_by_global_norm
from .parallel import set_num_threads, threads
from .pooling import AvgPool1d, AvgPool2d, GlobalAvgPool2d, MaxPool1d, MaxPool2d
from .recurrent import GRU, LSTM, RNN
from .sequence import Bidirectional, LastStep
from .sequential import Residual, Sequential
from .shape import Flatten
from .summarize import summary
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
    "CrossEntropy", "NLLLoss", "BCEWithLogits", "L1", "Huber",
    "SGD", "AdamW", "RMSprop", "clip_by_global_norm", "schedules",
    "Tanh", "Sigmoid", "GELU", "Identity", "BatchNorm2d", "LayerNorm", "Residual",
    "AvgPool2d", "GlobalAvgPool2d", "summary", "parallel", "memory", "set_num_threads", "threads",
    "Conv1d", "MaxPool1d", "AvgPool1d", "GroupNorm", "Lion", "transforms",
    "Embedding", "PositionalEmbedding", "SinusoidalPositions", "MultiHeadAttention",
    "TransformerEncoderLayer",
    "RNN", "LSTM", "GRU", "Bidirectional", "LastStep",
]
