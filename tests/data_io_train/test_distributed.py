"""fnn.distributed on a real LocalCluster (2 worker processes, 1 thread each, one per module).

Equality with fnn.fit, reproducibility with BatchNorm and Dropout, a worker killed by its pid
mid-epoch, lost clusters, sweeps and the command line. Params are compared, never timings.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import fnn  # noqa: E402
from fnn import distributed as fd  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with fd.local_cluster(2) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def two_workers(client):
    """The module's client, with both workers up (after a kill the nanny restarts one)."""
    client.wait_for_workers(2, timeout=30)
    return client


def _blobs(n=96, n_features=6, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centers = rng.standard_normal((n_classes, n_features)) * 2
    return centers[labels] + rng.standard_normal((n, n_features)), labels


def _mlp(coupled=False):
    extra = [fnn.BatchNormalization(16, alpha=0.9), fnn.Dropout(0.3)] if coupled else []
    return fnn.Sequential([fnn.Linear(6, 16), *extra, fnn.ReLU(), fnn.Linear(16, 3),
                           fnn.LogSoftMax()])


def _fit(fit, net, crit=None, epochs=2, batch_size=20, **kwargs):
    x, labels = _blobs()
    crit = crit or fnn.ClassNLLCriterion()
    opt = fnn.Adam(learning_rate=0.01)
    params, state = net.init(1)
    return fit(net, crit, opt, params, state, opt.init(params), x=x, labels=labels, epochs=epochs,
               batch_size=batch_size, key=7, validation=_blobs(30, seed=1), **kwargs)


def _one_blas_thread():
    """Workers run BLAS on one thread; a driver-side reference must too to be bit-equal."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return threadpoolctl.threadpool_limits(limits=1)


def _assert_close(a, b, rtol=1e-12):
    for u, v in zip(fnn.tree.leaves(a), fnn.tree.leaves(b)):
        if isinstance(u, np.ndarray):
            scale = max(np.max(np.abs(u)), 1e-300)
            assert np.max(np.abs(u - v)) <= rtol * scale
        else:
            assert u == v


def _assert_equal(a, b):
    for u, v in zip(fnn.tree.leaves(a), fnn.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)


def test_workers_import_the_drivers_fnn(client):
    assert set(client.run(lambda: __import__("fnn").__file__).values()) == {fnn.__file__}


@pytest.mark.parametrize("crit", [fnn.ClassNLLCriterion(), fnn.CrossEntropy(reduction="sum"),
                                  fnn.CrossEntropy(weight=(1.0, 3.0, 0.5))],
                         ids=["mean", "sum", "class-weights"])
def test_fit_equals_fnn_fit_up_to_summation_order(two_workers, crit):
    net = fnn.Sequential([fnn.Linear(6, 16), fnn.ReLU(), fnn.Linear(16, 3)]) \
        if isinstance(crit, fnn.CrossEntropy) else _mlp()
    ref = _fit(fnn.fit, net, crit)
    got = _fit(fd.fit, net, crit, client=two_workers, shards=3)  # 20 rows -> 7, 7, 6
    _assert_close(got.params, ref.params)
    _assert_close(got.opt_state, ref.opt_state)
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(got.history[k], ref.history[k], rtol=1e-12)
    assert len(got.history["seconds"]) == 2


def test_one_shard_is_fnn_fit_bit_for_bit_with_batchnorm_and_dropout(two_workers):
    net = _mlp(coupled=True)
    got = _fit(fd.fit, net, client=two_workers, shards=1)
    with _one_blas_thread():
        ref = _fit(fnn.fit, net)
    _assert_equal((got.params, got.state, got.opt_state), (ref.params, ref.state, ref.opt_state))
    assert got.history["loss"] == ref.history["loss"]


def test_batchnorm_and_dropout_are_reproducible_for_a_shard_count(two_workers):
    net = _mlp(coupled=True)
    a, b = (_fit(fd.fit, net, client=two_workers, shards=2) for _ in range(2))
    _assert_equal((a.params, a.state), (b.params, b.state))
    one = _fit(fd.fit, net, client=two_workers, shards=1)
    assert not np.array_equal(a.params[0].W, one.params[0].W)  # per-shard statistics, masks
    assert a.state[2].key != one.state[2].key


def _misaligned(a):
    """A copy of ``a`` at an address that is not a multiple of its itemsize, as Dask can
    deserialize it."""
    buf = np.empty(a.nbytes + 16, np.uint8)
    start = (-buf.ctypes.data) % 8 + 4
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def test_the_shard_task_does_not_depend_on_where_dask_put_the_params():
    net, (x, labels) = _mlp(coupled=True), _blobs()
    params, state = net.init(3)
    t = fnn.data.one_hot(labels, 3)
    idx = np.arange(40)
    aligned = fd._shard_gradients(net, fnn.ClassNLLCriterion(), params, state, x, t, idx)
    moved = fnn.tree.map(lambda a: _misaligned(a) if isinstance(a, np.ndarray) else a,
                         (params, state))
    _assert_equal(fd._shard_gradients(net, fnn.ClassNLLCriterion(), *moved, x, t, idx), aligned)


def test_a_worker_killed_mid_epoch_changes_nothing(two_workers):
    net = _mlp(coupled=True)
    kwargs = dict(client=two_workers, shards=2, epochs=2, batch_size=4)  # 24 steps per epoch
    ref = _fit(fd.fit, net, **kwargs)
    victim = sorted(two_workers.run(os.getpid).values())[0]
    killed = threading.Event()

    def kill():
        os.kill(victim, signal.SIGKILL)
        killed.set()

    def kill_soon(epoch, history):
        if epoch == 1:  # early in epoch 2, from another thread while the steps go on
            threading.Timer(0.01, kill).start()

    got = _fit(fd.fit, net, on_epoch=kill_soon, **kwargs)
    assert killed.is_set()  # before fit returned, so during epoch 2
    assert victim not in two_workers.run(os.getpid).values()
    _assert_equal((got.params, got.state, got.opt_state), (ref.params, ref.state, ref.opt_state))
    assert got.history["loss"] == ref.history["loss"]


def _small_cluster(n_workers):
    return fd.local_cluster(n_workers, processes=False)


def test_losing_every_worker_raises_with_the_last_completed_step():
    with _small_cluster(1) as cluster, distributed.Client(cluster) as c:
        def stop_workers(epoch, history):
            cluster.scale(0)
            while c.nthreads():  # gone before epoch 2 starts
                time.sleep(0.01)

        with pytest.raises(fd.ClusterError, match=r"epoch 2 step 1 .*no worker") as info:
            _fit(fd.fit, _mlp(), client=c, epochs=3, on_epoch=stop_workers, timeout=1.0)
        assert cluster.scheduler_address in str(info.value)
    result = info.value.result
    ref = _fit(fnn.fit, _mlp(), epochs=1)
    _assert_close((result.params, result.opt_state), (ref.params, ref.opt_state))
    assert result.history["loss"] == pytest.approx(ref.history["loss"], rel=1e-12)


def test_losing_the_scheduler_raises_with_the_last_completed_step():
    with _small_cluster(1) as cluster, distributed.Client(cluster, timeout=2) as c:
        with pytest.raises(fd.ClusterError, match=r"epoch 2 step 1 .*lost the cluster") \
                as info:
            _fit(fd.fit, _mlp(), client=c, epochs=3,
                 on_epoch=lambda epoch, h: cluster.close(), timeout=2.0)
        assert info.value.result.history["loss"] != []


def test_an_unreachable_scheduler_is_named():
    with pytest.raises(fd.ClusterError, match=r"cannot reach the Dask scheduler at "
                                              r"'tcp://127.0.0.1:9'"):
        _fit(fd.fit, _mlp(), client="tcp://127.0.0.1:9", timeout=0.5)


def test_a_scheduler_without_workers_is_named():
    with _small_cluster(0) as cluster:
        address = cluster.scheduler_address
        with pytest.raises(fd.ClusterError, match=f"{address}: the cluster has no worker"):
            _fit(fd.fit, _mlp(), client=address, timeout=0.5)


def test_a_layer_error_in_a_task_is_the_layers(two_workers):
    net = fnn.Sequential([fnn.Linear(5, 3), fnn.LogSoftMax()])  # the data have 6 features
    with pytest.raises(ValueError, match=r"Linear.*expected input of shape \(N, 5\)") as info:
        _fit(fd.fit, net, client=two_workers)
    assert any("epoch 1 step 1" in note for note in info.value.__notes__)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_workers=2, client="tcp://127.0.0.1:9"), ValueError, "cannot be combined"),
    (dict(client=42), TypeError, "client must be None"),
    (dict(shards=0), ValueError, "shards must be a positive integer, got 0"),
    (dict(epochs=0), ValueError, "epochs must be a positive integer, got 0"),
])
def test_bad_arguments_fail_before_any_work(kwargs, error, match):
    with pytest.raises(error, match=match):
        _fit(fd.fit, _mlp(), **kwargs)


def _train(config):
    if config["lr"] < 0:
        raise ValueError(f"negative learning rate {config['lr']}")
    net, x, labels = _mlp(), *_blobs()
    opt = fnn.SGDMomentum(learning_rate=config["lr"], momentum=0.9)
    params, state = net.init(0)
    result = fnn.fit(net, fnn.ClassNLLCriterion(), opt, params, state, opt.init(params), x=x,
                     labels=labels, epochs=2, batch_size=16, key=0)
    return config["lr"], result.history["loss"][-1]


def test_sweep_keeps_the_order_and_each_failure_in_its_slot(two_workers):
    configs = [{"lr": 0.1}, {"lr": -1.0}, {"lr": 0.01}, {"lr": 0.05}]
    results = fd.sweep(_train, configs, client=two_workers)
    assert [r[0] for r in results if not isinstance(r, Exception)] == [0.1, 0.01, 0.05]
    assert isinstance(results[1], ValueError) and "-1.0" in str(results[1])
    lr, loss = _train(configs[2])  # here: BLAS threads may differ from the workers'
    assert results[2][0] == lr and results[2][1] == pytest.approx(loss, rel=1e-12)


def test_command_line_on_a_cluster_prints_the_same_lines(two_workers, tmp_path, capsys):
    pytest.importorskip("sklearn")
    from fnn import cli

    common = ["--epochs", "1", "--batch-size", "256", "--dtype", "float64"]
    assert cli.main([*common, "--out", str(tmp_path / "a")]) == 0
    local = capsys.readouterr().out.splitlines()
    assert cli.main([*common, "--out", str(tmp_path / "b"),
                     "--scheduler", two_workers.scheduler.address]) == 0
    remote = capsys.readouterr().out.splitlines()
    assert len(remote) == len(local) == 4 and remote[0] == local[0]
    assert [line.split()[:2] for line in remote[:3]] == [line.split()[:2] for line in local[:3]]
    assert remote[3] == local[3].replace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert cli.parse_args(["--workers", "3", "--out", str(tmp_path / "c")]).workers == 3
