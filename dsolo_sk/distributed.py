"""Dataset-scale evaluation on Dask.

:func:`evaluate_distributed` sends one task per image to the workers of a
Dask cluster: an existing one (a :class:`~dask.distributed.Client` or a
scheduler address) or a :class:`~dask.distributed.LocalCluster` started for
the run. The segmenter and the dataset reader travel once per worker, in a
worker plugin; the models are loaded on a worker's first image, into the
extractors' process-level cache, and reused for every later image of that
worker. The client writes each result to the output folder as it arrives
(exactly as :func:`dsolo_sk.evaluation.evaluate` does), so the folder needs
no shared file system, a run can be resumed by either runner, and the
confusion matrix is the same as the single-process one: per-image counts
are integers and their sum does not depend on the order of arrival.
"""

import uuid
from numbers import Integral

from distributed.diagnostics.plugin import WorkerPlugin

from ._validation import check_scalar
from .evaluation import _progress, evaluate_sample, start_run

__all__ = ["evaluate_distributed", "worker_model_loads"]

#: Most processes (and threads per process) of a local Dask cluster.
MAX_LOCAL_WORKERS = 256

def _check_workers(value, name):
    """A checked count of processes or threads of a local cluster."""
    return check_scalar(value, name, target_type=Integral, min_val=1,
                        max_val=MAX_LOCAL_WORKERS)


#: Per worker process: plugin name -> (estimator, dataset, protocol,
#: scores, geometry).
_STATE = {}


class _RunPlugin(WorkerPlugin):
    """Worker plugin that installs the run's estimator and dataset."""

    def __init__(self, name, payload):
        self.name = name
        self.payload = payload

    def setup(self, worker):
        _STATE[self.name] = self.payload

    def teardown(self, worker):
        _STATE.pop(self.name, None)


def _evaluate_on_worker(name, index):
    estimator, dataset, protocol, scores, geometry = _STATE[name]
    sid, cm, seconds = evaluate_sample(estimator, dataset, index, protocol,
                                       scores=scores, geometry=geometry)
    return index, sid, cm, seconds


def _model_loads():
    from .features import _cache

    return {"|".join(map(str, k)): int(v)
            for k, v in _cache._LOAD_COUNTS.items()}


def worker_model_loads(client):
    """How many times each worker loaded each model.

    Returns
    -------
    dict
        Worker address -> {model key: number of loads}. After a run every
        count is 1: each worker process loads a model once.

    Examples
    --------
    An in-process cluster (its worker shares this process's model cache):

    >>> from dask.distributed import Client
    >>> from dsolo_sk.distributed import worker_model_loads
    >>> with Client(processes=False, n_workers=1,
    ...             dashboard_address=None) as client:
    ...     loads = worker_model_loads(client)
    >>> len(loads), [type(v).__name__ for v in loads.values()]
    (1, ['dict'])
    """
    return client.run(_model_loads)


def _connect(client, address, n_workers, threads_per_worker):
    from distributed import Client, LocalCluster

    if client is not None:
        return client, []
    if address is not None:
        c = Client(address)
        return c, [c]
    cluster = LocalCluster(n_workers=n_workers,
                           threads_per_worker=threads_per_worker,
                           processes=True, dashboard_address=None)
    c = Client(cluster)
    return c, [c, cluster]


def evaluate_distributed(estimator, dataset, *, client=None, address=None,
                         n_workers=2, threads_per_worker=1, protocol=None,
                         out=None, limit=None, scores="auto", progress=True):
    """Evaluate a segmenter on a benchmark with Dask workers.

    Parameters
    ----------
    estimator, dataset, protocol, out, limit, scores, progress
        As in :func:`dsolo_sk.evaluation.evaluate`; the estimator and the
        dataset reader must be picklable (the package's are).
    client : dask.distributed.Client, optional
        A connected client; the cluster is left running afterwards.
    address : str, optional
        Scheduler address (``"tcp://host:8786"``) to connect to when no
        `client` is given.
    n_workers : int, default=2
        Worker processes of the :class:`~dask.distributed.LocalCluster`
        started when neither `client` nor `address` is given (closed at the
        end), 1 to 256.
    threads_per_worker : int, default=1
        Threads of each local worker, 1 to 256; the models are not shared
        between threads, so one per worker keeps one model copy per process.

    Returns
    -------
    EvaluationResult
        The same confusion matrix as :func:`~dsolo_sk.evaluation.evaluate`.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from dask.distributed import Client
    >>> from dsolo_sk.datasets import load_dataset, write_fake_dataset
    >>> from dsolo_sk.distributed import evaluate_distributed
    >>> ds = load_dataset("ade20k", write_fake_dataset("ade20k", tempfile.mkdtemp()))
    >>> def first_class(image):
    ...     return np.eye(150)[0][:, None, None] * np.ones(image.shape[:2])
    >>> with Client(processes=False, n_workers=1,
    ...             dashboard_address=None) as client:
    ...     res = evaluate_distributed(first_class, ds, client=client,
    ...                                progress=False)
    >>> int(res.confusion_matrix[:, 1:].sum())
    0
    """
    for name, value in (("n_workers", n_workers),
                        ("threads_per_worker", threads_per_worker)):
        _check_workers(value, name)
    run = start_run(estimator, dataset, protocol=protocol, out=out,
                    limit=limit, scores=scores)
    if not run.todo:
        return run.finish()
    client, owned = _connect(client, address, n_workers, threads_per_worker)
    name = f"dsolo-sk-run-{uuid.uuid4().hex[:12]}"
    futures = []
    try:
        from distributed import as_completed

        client.register_plugin(_RunPlugin(name, (
            run.estimator, dataset, run.protocol, scores, run.geometry)),
            name=name)
        futures = [client.submit(_evaluate_on_worker, name, i, pure=False,
                                 key=f"{name}-{i}") for i in run.todo]
        bar = _progress(progress, run.n, run.n - len(run.todo), dataset.name)
        try:
            for future in as_completed(futures):
                index, sid, cm, seconds = future.result()
                run.add(index, sid, cm, seconds)
                future.release()
                bar.update(1)
        finally:
            bar.close()
    finally:
        if futures:
            client.cancel([f for f in futures if not f.done()])
        try:
            client.unregister_worker_plugin(name)
        except Exception:  # noqa: BLE001 - best effort on a closing cluster
            pass
        for obj in owned:
            obj.close()
    return run.finish()
