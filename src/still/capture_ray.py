"""Capture across a Ray cluster: requests answered in blocks by Ray actors, stored by the driver.

`still capture|bench|run --ray [ADDRESS]` puts a `RayEngine` on the run. Each model the run
asks then becomes a `RayProvider`: a pool of actors, one per worker, each holding the
provider `get_model(ref)` gives in its own process (a local model, an endpoint client, a
vLLM engine). The driver stays what it is in one process: `still.capture.capture` looks
every request up in the store first and hands only the unanswered ones over, and it stores
what comes back. This module only moves requests out and completions back:

- **Blocks.** The unanswered requests (sorted by length, as `capture` sorts them) are cut
  into blocks of the provider's batch size (the task's `generation.batch_size`, or the
  worker provider's own `batch_size`: an endpoint's concurrency), so a block is the batch a
  one-process capture would send. Idle actors get the next block.
- **Stored as blocks finish, exactly once.** The driver waits on whichever block finishes
  first (`ray.wait`) and hands its completions to `capture`, which commits them in one
  transaction, as it commits a local batch. Only the driver writes, and it takes each
  block's answers once. A killed driver loses only the blocks in flight: the rerun finds
  the rest in the store and sends only what is missing.
- **A lost worker.** When an actor dies (its process killed, its node gone), its block is
  sent again to a fresh actor that replaces it, up to `MAX_ATTEMPTS` times; a block lost
  that often is stored as failed completions, which a rerun retries, as with any failed
  call. Whatever a dead actor had computed never reached the store, so nothing is stored
  twice.
- **Actors outlive a capture.** The pool of the model last used stays up for the next
  capture of the same model (a run asks the teacher for train, validation and test
  splits); asking another model replaces it, so two pools never compete for the cluster.
- **vLLM workers.** A `vllm:` actor holds one vLLM engine, which starts its engine
  processes with spawn (vLLM forces it inside a Ray actor; the actor's own module guards
  its entry point, so that works). On a cluster with GPUs each actor takes one GPU, which
  Ray makes the only one the engine sees. On CPUs each actor takes its share of the CPUs
  (`num_cpus`) and its engine as many OpenMP threads, unpinned: vLLM pins its threads to
  the cores it sees, and Ray does not divide a node's cores between actors, so two engines
  would pin to the same cores (on 2 cores, both to core 0: vLLM keeps the other for its
  scheduler). Each engine gets the task's KV cache, or the provider's own 2 GiB
  default (`still.models._vllm.CPU_KV_CACHE_BYTES`): set `vllm.options.
  kv_cache_memory_bytes` in the task when many CPU engines share one node's memory. An
  actor's engine processes end with it, stopped or killed (none outlived `ray.kill` or a
  SIGKILL here).

Why plain actors and not Ray Data (`from_items(...).map_batches(Worker, concurrency=N)`):
Ray Data starts an actor pool for each dataset it executes, so each capture (a `still run`
makes a dozen) would load the model again in every worker; its streaming executor took
7-21 s to push 40 trivial rows through two actors here where two plain actors started in
2 s (Ray 2.60, 2 CPUs); and its rows travel as Arrow tables, which nested completions (chat
messages, per-token logprobs) would have to be flattened into and back out of. What it
would give, results streamed back as blocks finish and lost actors restarted with their
block retried, is a few lines with `ray.wait`, with the retry counted and bounded here.

`ray` is imported only when an engine is made: `pip install 'still[ray]'` installs it.
Workers import `still` themselves, so a remote cluster needs it installed on every node
(the same version, or `runtime_env`); the driver's `STILL_*`, `OPENAI_*`, `AZURE_OPENAI_*`
and `HF_*` variables are passed to the workers, other credentials must be set there.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import socket
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from still.errors import StillError
from still.models import Provider, get_model, gpus_per_engine
from still.types import Completion, Request

log = logging.getLogger("still.capture")

MAX_ATTEMPTS = 3
"""How often a block is sent before its requests are stored as failed (lost workers)."""

FORWARDED_ENV = ("STILL_", "OPENAI_", "AZURE_OPENAI_", "HF_", "VLLM_")
"""Prefixes of the driver's environment variables that workers get too."""

LOCAL = "local"
"""The address `--ray` means without one: start a Ray instance on this machine."""


class RayError(StillError, RuntimeError):
    """Ray is not installed or not reachable, or its workers died loading the model."""


def _ray() -> Any:
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise _not_installed(exc) from exc
    return ray


def _not_installed(why: object) -> RayError:
    return RayError(f"--ray needs Ray, which is not installed ({why}): pip install 'still[ray]'")


def check(address: str | None) -> None:
    """What can be checked without starting Ray: it is installed, and something listens
    at a `host:port` address.

    Raises:
        RayError: it is not installed, or nothing answers at the address.
    """
    try:
        found = importlib.util.find_spec("ray") is not None
    except ValueError:  # a module object without a spec: `ray` set to None, a stub
        found = False
    if not found or sys.modules.get("ray", ...) is None:
        raise _not_installed("no module named 'ray'")
    if address not in (None, LOCAL, "auto"):
        _check_reachable(str(address))


def _unreachable(address: str) -> RayError:
    return RayError(
        f"no Ray cluster reachable at {address}: start one with `ray start --head` and pass "
        "the address it prints to --ray-address, or use --ray alone to start one on this machine"
    )


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast on `host:port` or `ray://host:port` with nothing listening (Ray itself
    retries for a long while before it gives up)."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise _unreachable(address) from exc
    if not host or port is None:
        raise RayError(f"--ray {address}: give an address as host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise _unreachable(address) from exc


def connect(address: str | None = None) -> Any:
    """Join a Ray cluster, or start one on this machine; returns the `ray` module.

    Args:
        address: `auto` (the cluster this machine belongs to), `host:port` or
            `ray://host:port`; None or `local` starts a Ray instance here. When Ray is
            already initialised in this process (a library caller, a test), that one is used.

    Raises:
        RayError: Ray is not installed, or nothing answers at the address.
    """
    check(address)
    ray = _ray()
    remote = address not in (None, LOCAL)
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no report home from a capture
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if not remote:  # this machine's alone: no dashboard, reachable on loopback only
        kwargs.update(include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        ray.init(address=address if remote else None, **kwargs)
    except ConnectionError as exc:
        raise _unreachable(str(address)) from exc
    return ray


class _Worker:
    """One actor: the provider of one model reference, loaded in the actor's process."""

    def __init__(self, ref: str, setup: Callable[[], None] | None) -> None:
        self.failure: BaseException | None = None
        self.provider: Provider | None = None
        try:
            if setup is not None:
                setup()
            self.provider = get_model(ref)
        except Exception as exc:  # noqa: BLE001 - raised again on the driver by ready()
            self.failure = exc

    def ready(self) -> tuple[int, int | None]:
        """The actor's process id and its provider's own batch size, once it is loaded."""
        if self.failure is not None:
            raise self.failure
        return os.getpid(), getattr(self.provider, "batch_size", None)

    def answer(self, requests: list[Request]) -> list[Completion]:
        """One block through the provider: a completion per request, in order."""
        if self.provider is None:
            raise RuntimeError(f"no provider: {self.failure}")
        return self.provider.complete(requests)


@functools.cache
def _worker_class(ray: Any) -> Any:
    """`_Worker` as a Ray actor class (made once per process)."""
    return ray.remote(_Worker)


def _cause(exc: Any) -> BaseException:
    """What a worker raised, out of the `RayTaskError` that carried it to the driver."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _lost_worker_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """The errors of a block whose actor died, as against one its provider raised."""
    exc = ray.exceptions
    return (exc.RayActorError, exc.WorkerCrashedError, exc.ObjectLostError)


@dataclass
class _Pool:
    """The actors answering one model."""

    ref: str
    actors: list[Any]
    pids: list[int]
    batch_size: int | None
    cpus: int
    """CPUs each actor takes (and its vLLM engine's threads)."""


@dataclass
class RayEngine:
    """Where a run's models answer when `--ray` is given: pools of Ray actors.

    Implements `still.pipeline.Engine`: a run with `run.engine = RayEngine(...)` asks every
    model through it. Made, it checks what it can without Ray (installed, an address that
    answers), so a mistake fails before any work; it joins or starts Ray at the first model
    call, so a capture answered from the store alone starts nothing.

    Attributes:
        address: see `connect`.
        workers: actors per model; by default one per GPU of the cluster for a local or
            vLLM model on a cluster with GPUs, else one per CPU.
        lost: blocks sent again because their worker died (over the engine's life).
    """

    address: str | None = None
    workers: int | None = None
    lost: int = 0
    _pool: _Pool | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check(self.address)

    @functools.cached_property
    def _ray(self) -> Any:
        return connect(self.address)

    def model(self, ref: str, batch_size: int, setup: Callable[[], None] | None) -> RayProvider:
        """A provider answering `ref` through this engine's actors.

        Args:
            ref: the model reference, as `get_model` takes it (loaded in each worker).
            batch_size: requests per block, unless the worker's provider has its own.
            setup: run in each worker before the model is loaded: the process-wide model
                settings the driver's run made (endpoint key variables, engine options).
        """
        return RayProvider(self, ref, batch_size, setup)

    def pool(self, ref: str, setup: Callable[[], None] | None) -> _Pool:
        """The actors of `ref`, started (and loaded) when not already up; another model's
        pool is stopped first."""
        if self._pool is not None and self._pool.ref == ref:
            return self._pool
        self.close()
        gpu = self._gpu(ref)
        resources = self._ray.cluster_resources()
        each = self._gpus_each(ref) if gpu else 1  # a tensor-parallel engine spans several
        n = self.workers or max(1, int(resources.get("GPU" if gpu else "CPU", 1)) // each)
        # a vLLM engine on CPUs computes with threads: each gets its share of the CPUs
        cpus = max(1, int(resources.get("CPU", 1)) // n) if _is_vllm(ref) and not gpu else 1
        actors = [self._actor(ref, setup, gpu, cpus) for _ in range(n)]
        try:
            ready = self._ray.get([a.ready.remote() for a in actors])
        except self._ray.exceptions.RayTaskError as exc:
            self._kill(actors)
            raise _cause(exc) from None  # the provider's own error: an unknown model, ...
        except _lost_worker_errors(self._ray) as exc:
            self._kill(actors)
            raise RayError(f"{ref}: Ray workers died while loading the model: {exc}") from exc
        self._pool = _Pool(ref, actors, [pid for pid, _ in ready], ready[0][1], cpus)
        return self._pool

    def replace(self, pool: _Pool, i: int, setup: Callable[[], None] | None) -> None:
        """Put a fresh actor in place of the dead one at index `i`."""
        self._kill([pool.actors[i]])
        pool.actors[i] = self._actor(pool.ref, setup, self._gpu(pool.ref), pool.cpus)
        pool.pids[i] = -1  # not known until it has answered

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of the workers that started with the current pool."""
        return list(self._pool.pids) if self._pool is not None else []

    def close(self) -> None:
        """Stop the actors (the pool ends with the driver anyway)."""
        if self._pool is not None:
            self._kill(self._pool.actors)
            self._pool = None

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _gpu(self, ref: str) -> bool:
        """Whether `ref`'s workers each take a GPU: a model run here (not an endpoint or a
        scripted one) on a cluster that has GPUs."""
        scheme = ref.partition(":")[0]
        local = scheme in ("local", "vllm") or os.path.isfile(os.path.join(ref, "config.json"))
        return local and self._ray.cluster_resources().get("GPU", 0) >= 1

    @staticmethod
    def _gpus_each(ref: str) -> int:
        """GPUs one worker of `ref` takes: its vLLM engine's tensor x pipeline parallel
        size (the task's vllm: options), else one."""
        return gpus_per_engine() if _is_vllm(ref) else 1

    def _actor(self, ref: str, setup: Callable[[], None] | None, gpu: bool, cpus: int) -> Any:
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        if _is_vllm(ref) and not gpu:  # unpinned threads, unless the driver's VLLM_* say
            env = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(cpus), **env}
        options: dict[str, Any] = {"num_cpus": cpus, "max_restarts": 0, "max_task_retries": 0}
        if gpu:
            options["num_gpus"] = self._gpus_each(ref)
        if env:
            options["runtime_env"] = {"env_vars": env}
        return _worker_class(self._ray).options(**options).remote(ref, setup)

    def _kill(self, actors: Sequence[Any]) -> None:
        for actor in actors:
            self._ray.kill(actor)


@dataclass
class RayProvider:
    """One model answered by a pool of Ray actors, as `still.capture.capture` drives a
    provider: `complete_each` hands each block's completions over as it finishes."""

    engine: RayEngine
    name: str
    block_size: int
    setup: Callable[[], None] | None = None

    batch_size: int = 1 << 30
    """What `capture` hands over at once: everything unanswered, cut into blocks here."""

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer every request (in order), all blocks at once across the workers."""
        out: dict[int, Completion] = {}
        self.complete_each(requests, lambda done: out.update(done))
        return [out[i] for i in range(len(requests))]

    def complete_each(
        self,
        requests: Sequence[Request],
        on_results: Callable[[list[tuple[int, Completion]]], None],
    ) -> None:
        """Send the requests out in blocks; call `on_results` with each block's
        (index, completion) pairs as that block comes back, once per block."""
        if not requests:
            return
        ray = self.engine._ray
        pool = self.engine.pool(self.name, self.setup)
        size = pool.batch_size or self.block_size
        size = max(1, min(size, math.ceil(len(requests) / len(pool.actors))))
        n = len(requests)
        blocks = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
        todo = deque(range(len(blocks)))
        attempts = [0] * len(blocks)
        idle = deque(range(len(pool.actors)))
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (block, actor index)
        lost = _lost_worker_errors(ray)
        try:
            while todo or running:
                while todo and idle:
                    b, a = todo.popleft(), idle.popleft()
                    attempts[b] += 1
                    block = [requests[i] for i in blocks[b]]
                    running[pool.actors[a].answer.remote(block)] = (b, a)
                [done], _ = ray.wait(list(running), num_returns=1)
                b, a = running.pop(done)
                try:
                    outs: list[Completion] = ray.get(done)
                except lost as exc:
                    self.engine.lost += 1
                    self.engine.replace(pool, a, self.setup)
                    idle.append(a)
                    if attempts[b] < MAX_ATTEMPTS:
                        log.warning("%s: a Ray worker died; its block goes again", self.name)
                        todo.appendleft(b)
                        continue
                    why = f"RayWorkerLost: the block's worker died {attempts[b]} times: {exc}"
                    outs = [_failed(requests[i], why) for i in blocks[b]]
                except ray.exceptions.RayTaskError as exc:
                    raise _cause(exc) from None  # the provider raised: not a lost worker
                else:
                    idle.append(a)
                on_results(list(zip(blocks[b], outs, strict=True)))
        except BaseException:
            self.engine.close()  # nothing keeps computing for a capture that has stopped
            raise


def _is_vllm(ref: str) -> bool:
    return ref.startswith("vllm:")


def _failed(req: Request, why: str) -> Completion:
    return Completion(request=req, request_hash=req.key(), error=why)
