"""Research-style script: a small causal transformer learns to reverse digit sequences.

    python examples/transformer_reverse.py [STEPS]    # about a minute on 2 cores

Each example is the token sequence d_1 .. d_L SEP d_L .. d_1 (digits 0-9, SEP = 10). The model
reads it shifted by one (x = tokens[:-1]) and predicts every next token under a causal mask,
as a language model; the loss counts only the L positions after SEP, where the answer is
determined. Evaluation decodes greedily: after SEP the model is fed its OWN predictions, one
token at a time, and the token accuracy is the fraction of reversed digits it gets right on
fresh sequences. Everything is explicit: one seed gives the keys of the init and of the batches;
params, layer state (Dropout keys) and the optimizer state are values each step returns anew.

The loss runs on logits flattened from (N, L, C) to (N * L, C) for fnn.CrossEntropy (class axis
last), and its gradient is scattered back into the (N, T, C) output's positions.
"""

import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fnn

L, SEP, VOCAB = 8, 10, 11  # digits per sequence, separator token, vocabulary size
T = 2 * L  # the model's input length: d_1 .. d_L SEP d_L .. d_2


def model(dim: int = 64, heads: int = 4, depth: int = 2) -> fnn.Sequential:
    """tokens (N, T) -> logits over the next token (N, T, VOCAB)."""
    return fnn.Sequential([
        fnn.Embedding(VOCAB, dim), fnn.PositionalEmbedding(T, dim),
        *(fnn.TransformerEncoderLayer(dim, heads, 2 * dim, causal=True, norm_first=True)
          for _ in range(depth)),
        fnn.LayerNorm(dim), fnn.Linear(dim, VOCAB)])


def sequences(key: fnn.Key, n: int) -> np.ndarray:
    """n random examples, (n, 2L + 1): digits, SEP, the digits reversed."""
    digits = fnn.generator(key).integers(0, 10, (n, L))
    return np.concatenate([digits, np.full((n, 1), SEP), digits[:, ::-1]], axis=1)


def greedy_accuracy(net: fnn.Sequential, params, state, tokens: np.ndarray) -> float:
    """Feed d_1 .. d_L SEP, then the model's own predictions; the fraction of reversed digits
    that come out right."""
    state = fnn.eval_mode(state)
    x = tokens[:, :T].copy()
    x[:, L + 1:] = SEP  # hide the answer (each position is overwritten before it is read)
    answer = np.empty((len(x), L), np.int64)
    for i in range(L):  # position L + i (SEP, then the i-th answer) predicts token L + 1 + i
        logits, _ = net.forward(params, state, x)
        answer[:, i] = logits[:, L + i].argmax(axis=1)
        if i + 1 < L:
            x[:, L + 1 + i] = answer[:, i]
    return float(np.mean(answer == tokens[:, L + 1:]))


def main(steps: int = 500, batch: int = 64, seed: int = 0) -> float:
    net, crit = model(), fnn.CrossEntropy()
    schedule = fnn.schedules.WarmupCosineDecay(3e-3, steps, min(100, steps // 5))
    opt = fnn.AdamW(learning_rate=schedule, weight_decay=0.0)
    k_init, k_data, k_test = fnn.split_key(seed, 3)
    params, state = fnn.tree.cast(net.init(k_init), np.float32)
    opt_state = opt.init(params)
    start = time.perf_counter()
    for step, key in enumerate(fnn.split_key(k_data, steps), 1):
        tokens = sequences(key, batch)
        x, target = tokens[:, :-1], tokens[:, L + 1:]   # predict the L tokens after SEP
        logits, cache = net.forward(params, state, x)
        answer = logits[:, L:]                           # (N, L, C): positions SEP .. d_2
        loss, lcache = crit.forward(answer.reshape(-1, VOCAB), target.reshape(-1))
        dlogits = np.zeros_like(logits)
        dlogits[:, L:] = crit.backward(lcache).reshape(answer.shape)
        _, grads = net.backward(params, cache, dlogits)  # dx is None: the input is tokens
        params, opt_state = opt.update(params, grads, opt_state)
        state = cache.state
        if step % 100 == 0 or step == steps:
            print(f"step {step:5d}  loss {float(loss):.4f}  {time.perf_counter() - start:.1f} s",
                  flush=True)
    accuracy = greedy_accuracy(net, params, state, sequences(k_test, 1000))
    print(f"greedy token accuracy on 1000 fresh sequences: {accuracy:.4f} "
          f"({time.perf_counter() - start:.1f} s)")
    return accuracy


if __name__ == "__main__":
    with threadpool_limits(1, user_api="blas"):  # small matrices: more threads only contend
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
