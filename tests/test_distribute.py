"""Distributed training on tf.distribute: a real two-worker MultiWorkerMirroredStrategy cluster on 127.0.0.1.

The workers are real processes (tests/_distribute_worker.py) talking gRPC over loopback,
exactly as two machines would; nothing is faked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgecnn.compress.distribute import ClusterTask, is_chief, make_strategy, parse_tf_config
from edgecnn.errors import DeviceError
from helpers import assert_raised_error

WORKER = Path(__file__).with_name("_distribute_worker.py")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tf_config(ports, index: int, job: str = "worker") -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": job, "index": index}})


def _start_worker(out: Path, tf_config: str, steps: int) -> subprocess.Popen:
    env = {**os.environ, "TF_CONFIG": tf_config}
    return subprocess.Popen([sys.executable, str(WORKER), "worker", str(out), "--steps", str(steps)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout: float) -> list[tuple[int, str, str]]:
    """Wait for every process; SIGKILL (TensorFlow ignores SIGTERM while it waits for peers) on timeout."""
    deadline = time.monotonic() + timeout
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError(f"a worker did not finish within {timeout:.0f} s")
        results.append((proc.returncode, out, err))
    return results


def test_two_workers_distill_to_identical_weights_and_only_the_chief_writes(tmp_path):
    """Two MWMS workers end with the same weights, which equal one global-batch run; the chief alone writes.

    Agreement with a single-process run of the same global batches checks the per-replica
    loss scaling: with a per-replica mean instead of a global-batch mean the summed
    gradients would be twice as large, like the doubled-learning-rate run below.
    """
    from _distribute_worker import distill_config, distill_data, tiny_cnn

    from edgecnn.compress.distill import distill_student
    from edgecnn.models.loading import load_keras_model
    from edgecnn.progress import Progress

    steps = 4
    ports = _free_ports(2)
    outs = [tmp_path / f"worker{i}" for i in range(2)]
    start = time.monotonic()
    procs = [_start_worker(out, _tf_config(ports, i), steps) for i, out in enumerate(outs)]
    results = _finish(procs, timeout=110)
    took = time.monotonic() - start
    for rc, out, err in results:
        assert rc == 0, err[-3000:]
    print(f"two-worker distillation: {took:.1f} s")

    infos = [json.loads((out / "worker.json").read_text()) for out in outs]
    assert [info["chief"] for info in infos] == [True, False]
    assert all(info["replicas"] == 2 for info in infos)
    assert all(info["student_class"] == "Functional" for info in infos)
    assert all(info["distributed_variables"] == 0 for info in infos)  # detached before saving
    assert (outs[0] / "student.keras").is_file() and not (outs[1] / "student.keras").exists()
    assert json.loads((outs[0] / "ckpt" / "checkpoint.json").read_text())["epoch"] == 1
    # The other worker keeps its own checkpoint in a folder of its own, never the chief's files.
    assert json.loads((outs[1] / "ckpt" / "worker-1" / "checkpoint.json").read_text())["epoch"] == 1
    assert not (outs[1] / "ckpt" / "checkpoint.json").exists()
    weights = [list(np.load(out / "weights.npz").values()) for out in outs]
    assert len(weights[0]) == 6
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    saved = load_keras_model(outs[0] / "student.keras").get_weights()
    for a, b in zip(weights[0], saved):
        np.testing.assert_array_equal(a, b)

    # Reference: the same global batches on one device in this process.
    x, _, train = distill_data(steps, 32)
    cfg = distill_config(steps, 32)
    reference = {}
    for lr in (cfg.train.learning_rate, 2 * cfg.train.learning_rate):
        run_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"learning_rate": lr, "distribute": "default"})})
        student = tiny_cnn("student", 8, seed=3)
        distill_student(student, tiny_cnn("teacher", 16, seed=7), train, None, len(x), run_cfg, Progress(quiet=True))
        reference[lr] = student.get_weights()
    initial = tiny_cnn("student", 8, seed=3).get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(initial, weights[0])), "the workers did not train"
    for a, b in zip(reference[cfg.train.learning_rate], weights[0]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
    doubled = max(float(np.abs(a - b).max()) for a, b in zip(reference[2 * cfg.train.learning_rate], weights[0]))
    assert doubled > 1e-3, doubled
    assert took < 120

    # Re-run the same cluster: each worker restores its own checkpoint, they agree on the
    # epoch, and nothing is trained again.
    ports = _free_ports(2)
    procs = [_start_worker(out, _tf_config(ports, i), steps) for i, out in enumerate(outs)]
    for rc, out, err in _finish(procs, timeout=110):
        assert rc == 0, err[-3000:]
        assert "student: resuming from the checkpoint after epoch 1/1" in out and "student epoch" not in out, out
    for out, old in zip(outs, weights):
        for a, b in zip(old, np.load(out / "weights.npz").values()):
            np.testing.assert_array_equal(a, b)
    print(f"two-worker distillation and resume: {time.monotonic() - start:.1f} s")


@pytest.mark.parametrize("text, needle", [
    (None, "TF_CONFIG is not set"),
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', "cluster.worker[0]"),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "task worker:3 is not in the cluster"),
    ('{"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "worker", "index": 0}}', "'ps' is not supported"),
    ('{"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker", "index": 0}}', "listed twice"),
])
def test_malformed_tf_config_is_one_line(text, needle):
    with pytest.raises(DeviceError) as info:
        make_strategy("multi_worker", timeout_s=1, environ={} if text is None else {"TF_CONFIG": text})
    assert_raised_error(info, DeviceError, "TF_CONFIG", needle)


def test_tf_config_with_a_chief_names_the_chief():
    task = parse_tf_config('{"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 0}}')
    assert task == ClusterTask((("chief", 0, "a:1"), ("worker", 0, "b:2"), ("worker", 1, "c:3")), "worker", 0)
    assert task.address == "b:2" and task.peers == ("a:1", "c:3") and not task.is_chief


def test_unreachable_peer_fails_fast_with_one_line():
    ports = _free_ports(2)  # nobody listens on the second one
    start = time.monotonic()
    with pytest.raises(DeviceError) as info:
        make_strategy("multi_worker", timeout_s=2, environ={"TF_CONFIG": _tf_config(ports, 0)})
    took = time.monotonic() - start
    assert_raised_error(info, DeviceError, f"127.0.0.1:{ports[1]}", "did not answer within 2 s", "distribute_timeout_s")
    assert took < 8, took
    # The rendezvous gave its port back: a second attempt can listen there again.
    with pytest.raises(DeviceError, match="did not answer"):
        make_strategy("multi_worker", timeout_s=0.5, environ={"TF_CONFIG": _tf_config(ports, 0)})


def test_a_taken_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(DeviceError) as info:
            make_strategy("multi_worker", timeout_s=1, environ={"TF_CONFIG": _tf_config([port, port + 1], 0)})
    assert_raised_error(info, DeviceError, f"cannot listen on 127.0.0.1:{port}", "free the port")


def test_the_default_strategy_is_chief():
    strategy = make_strategy("default")
    assert strategy.num_replicas_in_sync == 1 and is_chief(strategy)
    with pytest.raises(DeviceError, match="not one of"):
        make_strategy("tpu")
