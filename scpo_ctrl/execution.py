"""Batches of independent work, in this process or on a Ray cluster.

A batch is a :class:`Recipe` (how a worker rebuilds what it runs: a builder function of ``scpo_ctrl`` and the
content it builds from, e.g. a plant file's text and a policy's widths) and a list of tasks (e.g. blocks of
parameter vectors and initial states). A worker builds the recipe once (cached by the recipe's sha256) and
calls the result on each task; results come back in task order, whatever the number of workers or the order in
which tasks finish, so a run is bit-identical to the in-process one when each task's result depends on the task
alone.

* :class:`LocalExecutor` runs the tasks in this process, in order.
* :class:`RayExecutor` (the optional extra ``scpo-ctrl[ray]``) starts or joins Ray and keeps one worker actor per
  CPU. Workers rebuild from content, never from pickled process state, so nothing assumes a shared filesystem. A
  worker killed mid-task is restarted and its task retried (tasks are pure: a retry cannot double-count); when
  the cluster goes away, the batch's remaining tasks run here and :attr:`RayExecutor.lost` is set, so the caller
  stops after its current iteration.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ScpoError, UsageError

LOG = logging.getLogger(__name__)

#: the functions a recipe may name (``module:function``): a recipe names one of these, it never carries code
BUILDERS = frozenset({"scpo_ctrl.scpo.bank:rollout_worker", "scpo_ctrl.verify.distributed:closed_loop_worker",
                      "scpo_ctrl.verify.distributed:reach_worker", "scpo_ctrl.scpo.bank:cost_worker"})
#: Ray's own retries of a block whose worker died, then this module's resubmissions (after a pause that grows
#: by BACKOFF each time, while a restarted worker rebuilds), then the batch fails with one clear line
MAX_RETRIES = 1
MAX_RESUBMISSIONS = 8
BACKOFF = 2.0  # [s]
#: how often a waiting driver checks that the cluster is still there [s]
LIVENESS_PERIOD = 5.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Recipe:
    """How a worker rebuilds what it runs.

    Attributes
    ----------
    builder : str
        One of :data:`BUILDERS`, ``module:function`` with ``function(content) -> callable(task) -> result``.
    content : bytes
        What the builder builds from (plain data: file texts, widths, hashes).
    """

    builder: str
    content: bytes

    @property
    def key(self) -> str:
        """sha256 of builder and content: the worker's cache key."""
        return hashlib.sha256(self.builder.encode() + b"\0" + self.content).hexdigest()

    def build(self) -> Callable[[Any], Any]:
        """Import the builder and build (in the calling process)."""
        if self.builder not in BUILDERS:
            raise ValueError(f"recipe builder {self.builder!r} is not one of {', '.join(sorted(BUILDERS))}")
        module_name, _, function_name = self.builder.partition(":")
        return getattr(importlib.import_module(module_name), function_name)(self.content)


class Executor(Protocol):
    """Runs a batch: ``map(recipe, tasks) -> [result per task]`` in task order."""

    workers: int
    description: str

    def map(self, recipe: Recipe, tasks: Sequence[Any], progress: Progress | None = None) -> list:
        ...

    def close(self) -> None:
        ...


@dataclass
class _Built:
    """What a process built, by recipe key (the most recent few)."""

    capacity: int = 4
    items: dict = field(default_factory=dict)

    def get(self, recipe: Recipe, where: str) -> Callable[[Any], Any]:
        """The built recipe; :class:`ExecutionError` (one line naming ``where`` and the builder) if it cannot be
        built (a library that does not load, a missing compiler, content whose sha256 differs)."""
        key = recipe.key
        if key not in self.items:
            if len(self.items) >= self.capacity:
                self.items.pop(next(iter(self.items)))
            try:
                self.items[key] = recipe.build()
            except Exception as exc:  # noqa: BLE001 - whatever the builder raised, reported in one line
                raise ExecutionError(f"{where} could not build {recipe.builder}: {_one_line(exc)}") from None
        return self.items[key]


class LocalExecutor:
    """Every task in this process, in order."""

    workers = 1
    description = "in-process"

    def __init__(self):
        self._built = _Built()

    def map(self, recipe: Recipe, tasks: Sequence[Any], progress: Progress | None = None) -> list:
        run = self._built.get(recipe, "this process")
        results = []
        for index, task in enumerate(tasks):
            results.append(run(task))
            if progress is not None:
                progress(index + 1, len(tasks))
        return results

    def close(self) -> None:
        self._built.items.clear()


class _Worker:
    """A Ray actor's state: the recipes it has built (rebuilt from content after a restart)."""

    def __init__(self):
        import os

        import ray

        self._built = _Built()
        context = ray.get_runtime_context()
        self._where = (f"the Ray worker (pid {os.getpid()}) on node {ray.util.get_node_ip_address()} "
                       f"({socket.gethostname()}, node id {context.get_node_id()[:12]})")

    def run(self, recipe: Recipe, task: Any) -> Any:
        return self._built.get(recipe, self._where)(task)

    def pid(self) -> int:
        import os

        return os.getpid()


class RayExecutor:
    """Tasks on Ray workers, one actor per CPU of the cluster (or ``workers``).

    Parameters
    ----------
    address : str
        ``auto`` joins the Ray already running on this machine or starts a local one; anything else is a
        cluster address for ``ray.init``.
    workers : int or None
        Actors to keep (default: the cluster's CPUs).
    """

    def __init__(self, address: str = "auto", workers: int | None = None):
        try:
            import ray
        except ImportError:
            raise UsageError("--ray needs Ray: pip install 'scpo-ctrl[ray]'") from None
        self._ray = ray
        self.address = address
        self._started = False
        joined = ray.is_initialized()
        if not joined:
            self._started = _connect(ray, address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, cpus if workers is None else min(workers, cpus))
        # Actors reserve no CPU and are spread over the nodes: when a node dies, its actors restart on the nodes
        # left (sharing their CPUs) instead of waiting for a free CPU that never comes.
        actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=MAX_RETRIES,
                           scheduling_strategy="SPREAD")(_Worker)
        self._actors = [actor.remote() for _ in range(self.workers)]
        self._recipes: dict = {}
        #: the cluster went away during a batch; its remaining tasks ran in this process
        self.lost = False
        self._local = LocalExecutor()
        where = f"the Ray this process had joined ({ray.get_runtime_context().gcs_address})" if joined else address
        self.description = f"Ray at {where} ({self.workers} workers)"

    def worker_pids(self) -> list:
        """Process ids of the worker actors (for fault-injection tests)."""
        return self._ray.get([actor.pid.remote() for actor in self._actors])

    def map(self, recipe: Recipe, tasks: Sequence[Any], progress: Progress | None = None) -> list:
        if self.lost:
            return self._local.map(recipe, tasks, progress)
        ray = self._ray
        recipe_ref = self._recipes.get(recipe.key)
        if recipe_ref is None:
            self._recipes = {recipe.key: ray.put(recipe)}  # the current recipe only: old ones are released
            recipe_ref = self._recipes[recipe.key]
        results: list = [None] * len(tasks)
        done = [False] * len(tasks)
        resubmitted = [0] * len(tasks)
        pending: dict = {}
        queue = list(range(len(tasks)))
        free = list(range(len(self._actors)))
        finished = 0
        try:
            while queue or pending:
                while queue and free:
                    index, actor = queue.pop(0), free.pop(0)
                    pending[self._actors[actor].run.remote(recipe_ref, tasks[index])] = (index, actor)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=LIVENESS_PERIOD)
                if not ready:
                    if not _cluster_alive(ray):
                        raise _ClusterGone()
                    continue
                for ref in ready:
                    index, actor = pending.pop(ref)
                    free.append(actor)
                    if not done[index]:
                        try:
                            results[index] = ray.get(ref)
                        except ray.exceptions.RayActorError as exc:
                            # the worker died (or is restarting): its block goes back in the queue, unless the
                            # whole cluster is gone (then Ray would end this process once its wait runs out)
                            if not _cluster_alive(ray):
                                raise _ClusterGone() from None
                            resubmitted[index] += 1
                            if resubmitted[index] > MAX_RESUBMISSIONS:
                                raise ExecutionError(
                                    f"a block of the batch lost its Ray worker {resubmitted[index]} times "
                                    f"({type(exc).__name__}); stopping") from None
                            LOG.info("block %d lost its worker (%s); resubmitting", index, type(exc).__name__)
                            time.sleep(BACKOFF * resubmitted[index])
                            queue.append(index)
                            continue
                        except ray.exceptions.RayTaskError as exc:
                            if isinstance(exc.cause, ExecutionError):  # the worker could not build the recipe
                                raise ExecutionError(str(exc.cause)) from None
                            raise
                        done[index] = True
                        finished += 1
                        if progress is not None:
                            progress(finished, len(tasks))
        except (_ClusterGone, ray.exceptions.RaySystemError, ConnectionError) as exc:
            LOG.warning("the Ray cluster went away (%s); the batch's other %d tasks run in this process",
                        type(exc).__name__, len(tasks) - finished)
            self.lost = True
            self._actors = []
            ray.shutdown()  # before Ray's own wait for the lost control store ends this process
            rest = [index for index in range(len(tasks)) if not done[index]]
            for index, result in zip(rest, self._local.map(recipe, [tasks[i] for i in rest])):
                results[index] = result
        return results

    def close(self) -> None:
        if self.lost:
            return
        for actor in getattr(self, "_actors", []):
            try:
                self._ray.kill(actor)
            except Exception:  # noqa: BLE001 - a dead cluster has nothing left to kill
                pass
        self._actors = []
        if self._started:
            self._ray.shutdown()


class _ClusterGone(Exception):
    pass


class ExecutionError(ScpoError):
    """A block of a distributed batch failed on every retry (its worker crashed each time), or a worker could not
    build the batch's recipe (one line naming the worker and what failed)."""


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (a compiler's multi-line output shortened to its first line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = type(exc).__name__ + (f": {lines[0]}" if lines else "")
    return text + (f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else "")


def _connect(ray, address: str) -> bool:
    """``ray.init`` quietly; returns True when this process started the Ray instance."""
    options = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False}
    if address == "auto":
        try:
            ray.init(address="auto", **options)
            return False
        except ConnectionError:
            ray.init(**options)
            return True
    try:
        ray.init(address=address, **options)
    except (ConnectionError, ValueError) as exc:
        raise UsageError(f"--ray {address}: cannot join a Ray cluster there ({exc})") from None
    return False


def _cluster_alive(ray) -> bool:
    """The cluster's control store (GCS) still accepts connections (asked without Ray, which would wait for it)."""
    try:
        host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=LIVENESS_PERIOD):
            return True
    except (OSError, ValueError, AttributeError):
        return False


def executor_for(ray_address: str | None, workers: int | None = None) -> Executor:
    """The executor a ``--ray`` setting asks for: None runs in this process."""
    if ray_address is None:
        return LocalExecutor()
    return RayExecutor(ray_address, workers)
