"""Where the parallel parts of `prepare` run: a local process pool, or a Ray cluster.

Three stages fan work out: ``ingredients`` (chunks of distinct lines), ``store`` (chunks of
recipes to encode) and ``shard`` (one task per shard: read photos, write the tar). Each hands an
:class:`Executor` a picklable function, an iterable of picklable items and, optionally, a
per-process ``initializer`` (load a vocabulary, build a spaCy pipeline) and gets the results back
**in submission order**, with at most ``2 x workers`` tasks in flight so memory stays flat
however long the input. The order is what makes the outputs byte-identical across backends and
worker counts: the driver writes results in the order the items were given.

``pool`` (the default) is :class:`concurrent.futures.ProcessPoolExecutor` over spawned
processes, or this process itself when one worker would do; the processes are kept from one
call to the next while no initializer is asked for (a stage that fans out twice starts its
workers once) and go when the executor is closed. ``ray`` submits the same function
as Ray tasks: to a local Ray started here (``num_cpus=workers``) or, with ``address``, to an
existing cluster (``"auto"``, a head ``"host:6379"``, or ``"ray://host:10001"``). Ray worker
processes are reused across tasks and stages, so the initializer runs once per process and per
distinct ``(initializer, initargs)`` and is cached there. Ray is imported only when used
(``pip install 'recipekit[ray]'``).

A task that raises stops the map: pending tasks are cancelled, running ones are waited for
(their outputs are atomic, see :func:`recipekit.core.io.atomic_path`), and :class:`TaskError` names the
failed item (``shard train/train-000003``, ``recipes 40000-59999``).

Pool workers watch their parent: when the main process dies without shutting the pool down
(``kill -9``, the out-of-memory killer), each worker notices within :data:`PARENT_POLL_S`
seconds that it has been re-parented and exits, and with them goes multiprocessing's resource
tracker (it ends when the last process holding its pipe does).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

__all__ = ["BACKENDS", "BackendError", "Executor", "PoolExecutor", "RayExecutor", "TaskError", "make_executor"]

BACKENDS = ("pool", "ray")
INFLIGHT_PER_WORKER = 2
PARENT_POLL_S = 0.5  # how often a pool worker checks that the process that started it is alive
_END = object()


def _watch_parent(parent: int, poll_s: float) -> None:
    while True:
        if os.getppid() != parent:  # the parent died: this process was handed to init or a subreaper
            os._exit(70)
        time.sleep(poll_s)


def _worker_start(parent: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """Initializer of every pool worker: start the parent watchdog, then the stage's initializer."""
    if os.getppid() != parent:  # died before this worker even started
        os._exit(70)
    threading.Thread(target=_watch_parent, args=(parent, PARENT_POLL_S), name="recipekit-parent-watch",
                     daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


class BackendError(RuntimeError):
    """The backend cannot be used: Ray is not installed, or its cluster cannot be reached."""


class TaskError(RuntimeError):
    """A task of a parallel stage failed; the message names the item, ``__cause__`` is the error."""


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _label(describe: Callable[[Any], str] | None, item: Any, index: int) -> str:
    if describe is None:
        return f"task {index}"
    try:
        return describe(item)
    except Exception:
        return f"task {index}"


def _fail(label: str, exc: BaseException) -> TaskError:
    cause = getattr(exc, "cause", None) or exc  # Ray wraps the task's exception
    return TaskError(f"{label} failed: {type(cause).__name__}: {cause}")


class Executor:
    """Ordered, bounded ``imap`` over picklable items. Use as a context manager."""

    name = "?"

    @property
    def workers(self) -> int:
        raise NotImplementedError

    def imap(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        initializer: Callable[..., None] | None = None,
        initargs: tuple = (),
        limit: int | None = None,
        describe: Callable[[Any], str] | None = None,
    ) -> Iterator[Any]:
        """``fn(item)`` for each item, yielded in order. ``limit`` caps the parallelism of this call
        (e.g. the number of chunks); ``describe(item)`` names an item in a :class:`TaskError`."""
        raise NotImplementedError

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], **kw: Any) -> list[Any]:
        return list(self.imap(fn, items, **kw))

    def release(self) -> None:
        """Let idle workers go (between stages); the next call starts what it needs."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serial(fn, items, initializer, initargs, describe) -> Iterator[Any]:
    if initializer is not None:
        initializer(*initargs)
    for i, item in enumerate(items):
        try:
            result = fn(item)
        except Exception as exc:
            raise _fail(_label(describe, item, i), exc) from exc
        yield result


class PoolExecutor(Executor):
    """Spawned worker processes (or this process itself for one worker).

    The pool outlives an ``imap`` call that finishes: the next call with the same number of
    workers and no initializer runs in the same processes (the `parse` stage reads layer1 and then
    det_ingrs without starting workers twice). A call that fails or is abandoned shuts the pool
    down, as does :meth:`close` (leaving the ``with`` block) or dropping the executor."""

    name = "pool"

    def __init__(self, workers: int | None = None) -> None:
        self._workers = max(1, workers or _default_workers())
        self._pool: ProcessPoolExecutor | None = None
        self._pool_size = 0
        self._finalizer: weakref.finalize | None = None

    @property
    def workers(self) -> int:
        return self._workers

    def _pool_for(self, n: int, initializer, initargs) -> ProcessPoolExecutor:
        if self._pool is not None and initializer is None and self._pool_size == n:
            return self._pool
        self.close()
        pool = ProcessPoolExecutor(n, mp_context=get_context("spawn"), initializer=_worker_start,
                                   initargs=(os.getpid(), initializer, initargs))
        if initializer is None:  # kept for the next call
            self._pool, self._pool_size = pool, n
            self._finalizer = weakref.finalize(self, pool.shutdown, wait=True, cancel_futures=True)
        return pool

    def imap(self, fn, items, *, initializer=None, initargs=(), limit=None, describe=None):
        n = min(self._workers, limit) if limit is not None else self._workers
        if n <= 1:
            yield from _serial(fn, items, initializer, initargs, describe)
            return
        pool = self._pool_for(n, initializer, initargs)
        pending: deque = deque()
        finished = False
        try:
            it = iter(items)
            index = 0
            while True:
                while len(pending) < INFLIGHT_PER_WORKER * n:
                    item = next(it, _END)
                    if item is _END:
                        break
                    pending.append((pool.submit(fn, item), item, index))
                    index += 1
                if not pending:
                    break
                fut, item, i = pending.popleft()
                try:
                    result = fut.result()
                except Exception as exc:
                    raise _fail(_label(describe, item, i), exc) from exc
                yield result
            finished = True
        finally:
            if pool is not self._pool:  # a pool of this call's own (it has an initializer)
                pool.shutdown(wait=True, cancel_futures=True)
            elif not finished:
                # On error (or an abandoned generator) drop what has not started; wait for the rest.
                self.close()

    def release(self) -> None:
        self.close()

    def close(self) -> None:
        """Shut the kept pool down (its workers finish what they run, then exit)."""
        if self._finalizer is not None:
            self._finalizer()  # pool.shutdown, once
        self._pool, self._pool_size, self._finalizer = None, 0, None


# -- Ray ------------------------------------------------------------------------------------
_INITIALISED: dict[str, str] = {}  # in each Ray worker process: initializer -> digest of its args


def _ray_task(payload, item):
    """Body of every Ray task: run the initializer once per process and arguments, then ``fn``."""
    fn, initializer, initargs, digest = payload
    if initializer is not None:
        key = f"{initializer.__module__}.{initializer.__qualname__}"
        if _INITIALISED.get(key) != digest:
            initializer(*initargs)
            _INITIALISED[key] = digest
    return fn(item)


class RayExecutor(Executor):
    """Ray tasks, one CPU each; Ray is started (and later shut down) here unless already running."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        if importlib.util.find_spec("ray") is None:
            raise BackendError("--backend ray needs Ray: pip install 'recipekit[ray]' (or pip install 'ray>=2.9')")
        self._requested = workers
        self.address = address
        self._ray = None
        self._started = False
        self._remote = None
        self._workers: int | None = None

    def _connect(self):
        if self._ray is not None:
            return self._ray
        import ray  # deferred: optional (recipekit[ray]) and heavy

        if not ray.is_initialized():
            # Quiet by arguments only: no dashboard, worker output stays in Ray's session logs.
            opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
            try:
                if self.address and self.address.startswith("ray://"):
                    ray.init(address=self.address)  # Ray Client: the server's own settings apply
                elif self.address:
                    ray.init(address=self.address, **opts)
                else:
                    # "local": always a new Ray on this machine, never one found by auto-detection
                    ray.init(address="local", num_cpus=self._requested or _default_workers(), **opts)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray"
                hint = " (a cluster with token authentication also needs RAY_AUTH_MODE=token; docs/scaling.md)"
                raise BackendError(f"could not start or join {where}: {exc}{hint if self.address else ''}") from exc
            self._started = True
        self._ray = ray
        # A task whose worker dies is retried (Ray's default, 3 times): outputs are atomic and
        # deterministic, so a retry writes the same bytes. An exception raised by the task is not.
        self._remote = ray.remote(num_cpus=1)(_ray_task)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self._workers = max(1, self._requested or cpus)
        return ray

    @property
    def workers(self) -> int:
        self._connect()
        assert self._workers is not None
        return self._workers

    def imap(self, fn, items, *, initializer=None, initargs=(), limit=None, describe=None):
        ray = self._connect()
        n = min(self.workers, limit) if limit is not None else self.workers
        n = max(1, n)
        digest = hashlib.sha256(pickle.dumps(initargs)).hexdigest() if initializer is not None else ""
        fn_ref = ray.put((fn, initializer, initargs, digest))  # once to the object store, resolved per task
        pending: deque = deque()
        ok = False
        try:
            index = 0
            it = iter(items)
            while True:
                while len(pending) < INFLIGHT_PER_WORKER * n:
                    item = next(it, _END)
                    if item is _END:
                        break
                    pending.append((self._remote.remote(fn_ref, item), item, index))
                    index += 1
                if not pending:
                    break
                ref, item, i = pending.popleft()
                try:
                    result = ray.get(ref)
                except Exception as exc:
                    raise _fail(_label(describe, item, i), exc) from exc
                yield result
            ok = True
        finally:
            if not ok and pending:
                refs = [p[0] for p in pending]
                for ref in refs:
                    ray.cancel(ref)
                # Let the cancelled tasks unwind (their atomic outputs clean up) before returning.
                ray.wait(refs, num_returns=len(refs), timeout=120)

    def close(self) -> None:
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._ray, self._started, self._remote = None, False, None


def make_executor(backend: str = "pool", workers: int | None = None, *, address: str | None = None) -> Executor:
    """An :class:`Executor` for ``backend`` (``"pool"`` or ``"ray"``). ``workers``: processes for
    the pool (default: all cores); for Ray the tasks in flight (default: the cluster's CPUs) and
    the CPUs of a local Ray. ``address`` (Ray only): an existing cluster to join."""
    if backend == "pool":
        if address:
            raise ValueError("--ray-address is only meaningful with --backend ray")
        return PoolExecutor(workers)
    if backend == "ray":
        return RayExecutor(workers, address)
    raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
