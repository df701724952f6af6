"""``tf.distribute`` strategies from the recipe's ``train.distribute`` setting.

``default`` trains on one device, ``mirrored`` on every local GPU (``MirroredStrategy``),
``multi_worker`` on every worker named in the ``TF_CONFIG`` environment variable
(``MultiWorkerMirroredStrategy``; the same program runs on each machine, each with its
own ``task.index``). Models and optimizers must be created inside ``strategy.scope()``;
:func:`edgecnn.compress.engine.fit` creates the optimizer there and checks the model was.

TensorFlow's own cluster start-up blocks without a bound when a worker never comes (it
also ignores SIGTERM while it waits), so before building ``MultiWorkerMirroredStrategy``
every worker meets the others on a plain TCP rendezvous on its own ``TF_CONFIG`` port,
bounded by ``train.distribute_timeout_s``: a missing or unreachable worker becomes one
:class:`~edgecnn.errors.DeviceError` line instead of a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import threading
import time
from typing import Iterator, Mapping, Optional

from edgecnn.errors import DeviceError

STRATEGIES = ("default", "mirrored", "multi_worker")
_JOBS = ("chief", "worker")  # the jobs MultiWorkerMirroredStrategy trains with


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This process's place in a multi-worker cluster, parsed from ``TF_CONFIG``.

    Attributes:
        tasks: ``(job, index, "host:port")`` for every training task, chief first.
        job: this task's job (``chief`` or ``worker``).
        index: this task's index within its job.
    """

    tasks: tuple[tuple[str, int, str], ...]
    job: str
    index: int

    @property
    def address(self) -> str:
        return next(a for j, i, a in self.tasks if (j, i) == (self.job, self.index))

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(a for j, i, a in self.tasks if (j, i) != (self.job, self.index))

    @property
    def is_chief(self) -> bool:
        """The chief writes artifacts: task ``chief:0`` if there is one, else ``worker:0``."""
        return (self.job, self.index) == self.tasks[0][:2]


def _split_address(address: object, where: str) -> tuple[str, int]:
    if not isinstance(address, str) or address.count(":") < 1:
        raise DeviceError(f"TF_CONFIG: {where} is {address!r}; each address must be a \"host:port\" string")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeviceError(f"TF_CONFIG: {where} is {address!r}; each address must be \"host:port\" with a port 1-65535")
    return host.strip("[]"), int(port)


def parse_tf_config(text: Optional[str]) -> ClusterTask:
    """Parse and check a ``TF_CONFIG`` value (JSON) for multi-worker training.

    Args:
        text: the variable's value; None or empty when it is not set.

    Returns:
        The parsed :class:`ClusterTask`.

    Raises:
        DeviceError: one line naming what is missing or malformed.
    """
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text or not text.strip():
        raise DeviceError(f"train.distribute is multi_worker but TF_CONFIG is not set; set it on every worker, {example}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeviceError(f"TF_CONFIG: not valid JSON ({exc.msg} at character {exc.pos}); {example}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise DeviceError(f"TF_CONFIG: no \"cluster\" object; {example}")
    cluster, task = config["cluster"], config.get("task")
    unknown = sorted(set(cluster) - set(_JOBS))
    if unknown:
        raise DeviceError(f"TF_CONFIG: cluster job {unknown[0]!r} is not supported by multi_worker training; "
                          "use only \"chief\" and \"worker\"")
    tasks: list[tuple[str, int, str]] = []
    for job in _JOBS:
        addresses = cluster.get(job, [])
        if not isinstance(addresses, list):
            raise DeviceError(f"TF_CONFIG: cluster.{job} must be a list of \"host:port\" strings; {example}")
        if job == "chief" and len(addresses) > 1:
            raise DeviceError(f"TF_CONFIG: cluster.chief lists {len(addresses)} addresses; there is at most one chief")
        for i, address in enumerate(addresses):
            _split_address(address, f"cluster.{job}[{i}]")
            tasks.append((job, i, address))
    if not tasks:
        raise DeviceError(f"TF_CONFIG: the cluster lists no workers; {example}")
    duplicated = sorted({a for _, _, a in tasks if [t[2] for t in tasks].count(a) > 1})
    if duplicated:
        raise DeviceError(f"TF_CONFIG: address {duplicated[0]} is listed twice; give every worker its own host:port")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise DeviceError(f"TF_CONFIG: no \"task\": {{\"type\", \"index\"}} saying which worker this is; {example}")
    job, index = task["type"], task["index"]
    if job not in _JOBS or not isinstance(index, int) or isinstance(index, bool):
        raise DeviceError(f"TF_CONFIG: task is {task!r}; type must be \"chief\" or \"worker\" and index an integer")
    if not 0 <= index < len(cluster.get(job, [])):
        raise DeviceError(f"TF_CONFIG: task {job}:{index} is not in the cluster, which has "
                          f"{len(cluster.get(job, []))} {job} address(es)")
    return ClusterTask(tuple(tasks), job, index)


def rendezvous(task: ClusterTask, timeout_s: float) -> None:
    """Wait until every peer of ``task`` accepts a TCP connection, listening on our own port meanwhile.

    Each worker listens on its ``TF_CONFIG`` port (so the others can reach it before
    TensorFlow's server starts there) and connects to every peer until all have
    answered or ``timeout_s`` has passed. The listener closes before returning, which
    frees the port for TensorFlow's gRPC server; peers still waiting retry until that
    server answers.

    Raises:
        DeviceError: our port is taken, or a peer did not answer within ``timeout_s``.
    """
    host, port = _split_address(task.address, f"this task's address ({task.job}:{task.index})")
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))
    except OSError as exc:
        listener.close()
        raise DeviceError(f"TF_CONFIG: cannot listen on {task.address} for {task.job}:{task.index} "
                          f"({exc.strerror}); free the port or give this worker another one") from None
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            conn.close()

    thread = threading.Thread(target=answer, name="edgecnn-rendezvous", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    waiting = list(task.peers)
    try:
        while waiting:
            peer = waiting[0]
            peer_host, peer_port = _split_address(peer, "a peer address")
            try:
                with socket.create_connection((peer_host, peer_port), timeout=min(1.0, timeout_s)):
                    waiting.pop(0)
                    continue
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"train.distribute multi_worker: worker at {peer} (from TF_CONFIG) did not answer within "
                    f"{timeout_s:g} s; start the same build on every worker in TF_CONFIG, or fix the address "
                    "(train.distribute_timeout_s sets the wait)")
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
        listener.close()


class WorkerFinished(Exception):
    """Raised by a stage on a non-chief worker once distributed training is done.

    Only the chief writes artifacts; the pipeline stops the other workers' builds here
    (exit 0) instead of letting them export and evaluate a model they do not save.
    """


# TensorFlow configures collective ops once per process and keeps this task's gRPC
# server on its port, so the multi-worker strategy is made once and shared by stages.
_multi_worker: dict[str, object] = {}


def make_strategy(kind: str = "default", *, timeout_s: float = 120.0, environ: Optional[Mapping[str, str]] = None):
    """The ``tf.distribute.Strategy`` for ``train.distribute``.

    Args:
        kind: ``default``, ``mirrored`` or ``multi_worker``.
        timeout_s: multi_worker only: how long to wait for the other workers, and the
            bound on each collective operation afterwards (a worker that dies mid-run
            makes the others fail instead of wait forever).
        environ: where ``TF_CONFIG`` is read (``os.environ`` by default).

    Returns:
        The strategy; create models and optimizers inside its ``scope()``.

    Raises:
        DeviceError: unknown kind, malformed ``TF_CONFIG`` or a worker that does not answer.
    """
    from edgecnn._tf import tensorflow

    if kind not in STRATEGIES:
        raise DeviceError(f"train.distribute: {kind!r} is not one of {', '.join(STRATEGIES)}")
    if kind == "default":
        tf = tensorflow()
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        tf = tensorflow()
        return tf.distribute.MirroredStrategy()
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    task = parse_tf_config(text)
    if "strategy" in _multi_worker:
        if _multi_worker["tf_config"] != text:
            raise DeviceError("train.distribute multi_worker: TF_CONFIG changed after this process joined its "
                              "cluster; one process trains in one cluster, run a new process")
        return _multi_worker["strategy"]
    if task.peers:
        rendezvous(task, timeout_s)
    tf = tensorflow()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise DeviceError(_cluster_failure(exc, task)) from None
    _multi_worker.update(strategy=strategy, tf_config=text)
    return strategy


def _cluster_failure(exc: Exception, task: ClusterTask) -> str:
    """One line for a cluster TensorFlow would not start; TF_CONFIG is blamed only where it is at fault.

    TF_CONFIG itself was parsed and every peer answered before this point, so the usual
    causes lie in this process or on this machine.
    """
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    where = "train.distribute multi_worker"
    if "configured at program startup" in first or "must be called at program startup" in first:
        return (f"{where}: this process ran TensorFlow before joining the cluster ({first}); "
                "MultiWorkerMirroredStrategy must be the first TensorFlow work of a process: run `edgecnn build` "
                "in a new process, or, calling edgecnn from Python, call "
                "edgecnn.compress.distribute.make_strategy('multi_worker') before anything else")
    if "address already in use" in first.lower() or "failed to bind" in first.lower():
        return (f"{where}: port of {task.address} ({task.job}:{task.index}) is taken on this machine ({first}); "
                "stop what listens there or give this worker another port in TF_CONFIG on every worker")
    return f"{where}: TensorFlow could not start the cluster as {task.job}:{task.index} ({first})"


@contextlib.contextmanager
def peer_failures(task: ClusterTask, where: str) -> Iterator[None]:
    """Turn a collective that failed because a peer died or went silent into one line.

    TensorFlow reports a crashed peer as ``UnavailableError`` ("tasks are unhealthy
    (stopped sending heartbeats): /job:worker/replica:0/task:1") and a silent one as
    ``DeadlineExceededError`` once ``distribute_timeout_s`` has passed; either way the
    cure is to re-run the build on every worker, which resumes at the last finished epoch.

    Raises:
        DeviceError: naming the peer's address when TensorFlow says which task it was.
    """
    try:
        yield
    except Exception as exc:
        from edgecnn._tf import tensorflow

        tf = tensorflow()
        if not isinstance(exc, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                                tf.errors.CancelledError, tf.errors.AbortedError)):
            raise
        text = str(exc)
        named = re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", text)
        peers = [a for j, i, a in task.tasks if (j, str(i)) in named and (j, i) != (task.job, task.index)]
        who = f"worker at {', '.join(dict.fromkeys(peers))} (from TF_CONFIG)" if peers else "another worker"
        how = "stopped responding" if isinstance(exc, tf.errors.UnavailableError) else \
            "did not take part in time"
        raise DeviceError(f"train.distribute multi_worker: {who} {how} during {where}; re-run the same build on "
                          "every worker: training resumes at the last finished epoch") from None


def agree_on_cache(strategy, key: str, have: bool, where: str) -> bool:
    """Whether every worker has the stage with cache key ``key`` finished; call it on every worker.

    One collective: each worker contributes its key's first 48 bits and whether it has the
    stage (in its run directory or cache). All restore only when all have it; otherwise
    all train it together, so no worker waits for peers that skipped the stage.

    Raises:
        DeviceError: the workers computed different keys (their recipes, data or input
            files differ), which would make them train different things.
    """
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    value = tf.constant([[int(key[:12], 16), int(bool(have))]], tf.int64)
    gathered = strategy.gather(strategy.run(lambda: tf.identity(value)), axis=0).numpy().tolist()
    keys = {k for k, _ in gathered}
    if len(keys) > 1:
        raise DeviceError(f"{where}: the workers computed different cache keys, so their recipes, data or input "
                          "files differ; run the same recipe on the same data and files on every worker")
    return all(h for _, h in gathered)


def is_chief(strategy=None) -> bool:
    """Whether this process writes artifacts: always outside multi-worker training, else only the chief."""
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def task_name(strategy) -> Optional[str]:
    """``worker-N`` / ``chief-N`` for a non-chief multi-worker task, None for the chief or one process."""
    if is_chief(strategy):
        return None
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type}-{resolver.task_id}"


def agree_on_epoch(strategy, epoch: int, where) -> int:
    """Check that every worker resumes at ``epoch``; returns it.

    Workers step in lockstep, so their checkpoints normally agree; a kill that lands
    between two workers' end-of-epoch writes can leave them one epoch apart, and
    training on would pair different steps' collectives. Outside multi-worker training
    this is a no-op.

    Raises:
        DeviceError: the workers' checkpoints are at different epochs.
    """
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return epoch
    value = tf.constant([epoch], tf.int64)
    gathered = strategy.gather(strategy.run(lambda: tf.identity(value)), axis=0).numpy().tolist()
    if len(set(gathered)) > 1:
        raise DeviceError(f"{where}: the workers' training checkpoints are at different epochs {gathered}; "
                          "delete the checkpoint folders on every worker (or `edgecnn cache prune`) and re-run")
    return epoch


def detach_from_strategy(model, strategy):
    """A plain copy, outside every strategy, of ``model`` trained under ``strategy``; call it on every worker.

    Variables made in a mirrored scope stay distributed after training: reading a
    BatchNorm moving statistic (a sync-on-read variable) outside a replica reduces it
    across *all* workers, so a chief that evaluates or saves alone after the others have
    stopped would wait forever. Copying the weights once, on every worker together,
    gives each a local model that evaluation, BatchNorm re-estimation and saving can use
    alone. Under the default strategy the model itself is returned.
    """
    from edgecnn._tf import keras, tensorflow
    from edgecnn.models.loading import tfmot_scopes

    tf = tensorflow()
    if not isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
        return model
    weights = model.get_weights()  # the cross-worker reads happen here, on every worker at once
    with tfmot_scopes():
        plain = keras().models.clone_model(model)
    plain.set_weights(weights)
    return plain
