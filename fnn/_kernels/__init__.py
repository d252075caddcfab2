"""Private numerical kernels of the convolution and pooling layers (not a public API).

The layer files (``fnn/conv.py``, ``fnn/pooling.py``) hold the contract: hyperparameters,
formulas, records and checks. This package holds how the arrays are computed:

- :mod:`.geometry`: the window geometry (kernel, stride, padding, dilation per axis, PyTorch's
  floor rule, ``"same"`` / ``"valid"``) and the int-or-tuple hyperparameter fields;
- :mod:`.conv_flat`: the tuned kernel of the classic convolution (flat padding);
- :mod:`.conv_im2col`: im2col / col2im on strided windows for every other convolution;
- :mod:`.pool`: window taps, first-maximum offsets and the tuned non-overlapping max pool;
- :mod:`.batchnorm`: BatchNormalization's training passes.

The convolutions' batch blocks, the pools' blocks of images and BatchNormalization's row blocks
run on :mod:`fnn.parallel`'s threads: a fixed partition of the shapes, partial results combined
in its order, the same bits for any number of threads.

Every function here takes and returns plain arrays (4-D, (N, C, H, W)); 1-D layers run as 2-D
with H = 1. ``tests/layers/test_kernels.py`` checks each kernel against naive loops.
"""

# Bytes of im2col columns per batch block: small enough that a block's columns, its output and
# its column gradient stay in a core's L2 cache, large enough that the products stay efficient.
BLOCK_BYTES = 1 << 20


def batch_block(n: int, sample_bytes: int) -> int:
    """Samples per batch block: as many as fit in BLOCK_BYTES (at least 1, at most n, and 1 for
    an empty batch so that buffers keep a valid shape)."""
    return max(1, min(n, BLOCK_BYTES // max(1, sample_bytes)))
