"""The verifier pool: scorer worker PROCESSES with a hard per-answer deadline, shared by the reward files
(``math_reward``, ``gym_reward``) and the evaluation tool.

Math-Verify runs in a small pool of worker processes (multiprocessing ``forkserver`` context by default): in
each, Math-Verify runs in the process's main thread with its own signal timeouts ON (``inner_timeout_s`` per
parse/compare; see :mod:`lens_openrlhf.rewards.verify_worker`). On top of that each answer has an outer
deadline (``timeout_s``, measured from the moment a worker receives it): a worker still busy then is killed
(only that process, which this module started) and replaced, and the answer scores 0 with reason
``timeout``. Other answers of the batch run on the other workers meanwhile.

Settings: :class:`RewardConfig`, read from ``LENS_MATH_*`` (or another prefix) by ``RewardConfig.from_env``.
A pool that cannot start raises :class:`WorkerStartError`; the reward files turn that into
:class:`VerifierUnavailable` (they never score every answer 0 because the verifier is missing).

Imports neither torch nor Math-Verify.
"""

import atexit
import itertools
import logging
import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from lens_openrlhf.rewards.outcome import Verdict
from lens_openrlhf.rewards.verify_worker import _worker_main

logger = logging.getLogger(__name__)


class WorkerStartError(RuntimeError):
    """A verifier process could not start (e.g. it cannot import Math-Verify or this package)."""


class VerifierUnavailable(RuntimeError):
    """The verifier cannot run at all (a bad ``LENS_MATH_*`` setting, workers that cannot start, Math-Verify
    missing). ``reward_func`` raises it instead of scoring every answer 0: under LENS an all-zero batch is
    all-negative groups that still train the model."""


@dataclass(frozen=True)
class RewardConfig:
    """Pool settings; ``RewardConfig.from_env()`` reads the ``LENS_MATH_*`` variables."""

    timeout_s: float = 5.0
    inner_timeout_s: Optional[int] = None  # None: max(1, ceil(timeout_s) - 1)
    workers: Optional[int] = None  # None: min(8, max(2, n_cpus // 2))
    mp_context: str = "forkserver"
    startup_timeout_s: float = 120.0

    def resolved(self) -> "RewardConfig":
        """A copy with the defaults filled in and every value checked."""
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"LENS_MATH_TIMEOUT_S / timeout_s must be a finite number > 0, got {self.timeout_s!r}")
        if not (math.isfinite(self.startup_timeout_s) and self.startup_timeout_s > 0):
            raise ValueError(
                "LENS_MATH_STARTUP_TIMEOUT_S / startup_timeout_s must be a finite number > 0, "
                f"got {self.startup_timeout_s!r}"
            )
        # Math-Verify's timeouts are wall-clock: generous, so that a legitimate answer on a loaded machine is
        # not cut short; the outer deadline still bounds the total.
        inner = self.inner_timeout_s if self.inner_timeout_s is not None else max(1, math.ceil(self.timeout_s) - 1)
        if int(inner) < 1:
            raise ValueError(f"LENS_MATH_INNER_TIMEOUT_S / inner_timeout_s must be >= 1 s, got {inner!r}")
        workers = self.workers if self.workers is not None else min(8, max(2, _n_cpus() // 2))
        if int(workers) < 1:
            raise ValueError(f"LENS_MATH_WORKERS / workers must be >= 1, got {workers!r}")
        if self.mp_context not in ("forkserver", "spawn"):
            raise ValueError(
                f"LENS_MATH_MP_CONTEXT / mp_context must be 'forkserver' or 'spawn', got {self.mp_context!r} "
                "('fork' is unsafe in the threaded processes OpenRLHF runs rewards in)"
            )
        return RewardConfig(
            timeout_s=float(self.timeout_s),
            inner_timeout_s=int(inner),
            workers=int(workers),
            mp_context=self.mp_context,
            startup_timeout_s=float(self.startup_timeout_s),
        )

    @classmethod
    def from_env(
        cls, environ: Optional[dict] = None, prefix: str = "LENS_MATH", workers: Optional[int] = None
    ) -> "RewardConfig":
        """Settings from ``<prefix>_TIMEOUT_S``, ``_INNER_TIMEOUT_S``, ``_WORKERS`` (default ``workers``),
        ``_MP_CONTEXT`` and ``_STARTUP_TIMEOUT_S``, resolved and checked."""
        env = os.environ if environ is None else environ

        def num(name, conv, default):
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                return conv(raw)
            except ValueError:
                raise ValueError(f"environment variable {name}={raw!r} is not a valid {conv.__name__}") from None

        return cls(
            timeout_s=num(f"{prefix}_TIMEOUT_S", float, 5.0),
            inner_timeout_s=num(f"{prefix}_INNER_TIMEOUT_S", int, None),
            workers=num(f"{prefix}_WORKERS", int, workers),
            mp_context=env.get(f"{prefix}_MP_CONTEXT", "forkserver") or "forkserver",
            startup_timeout_s=num(f"{prefix}_STARTUP_TIMEOUT_S", float, 120.0),
        ).resolved()


def _n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Worker:
    """One verifier process and the parent's end of its pipe."""

    def __init__(self, ctx, inner_timeout_s: int, target=None):
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        target = target or _worker_main
        self.module = getattr(target, "__module__", None) or "lens_openrlhf.rewards"
        self.proc = ctx.Process(target=target, args=(child_conn, inner_timeout_s), daemon=True, name="lens-math-verify")
        self.proc.start()
        child_conn.close()
        self.conn = parent_conn
        self.ready = False

    def wait_ready(self, timeout_s: float) -> None:
        if self.ready:
            return
        try:
            if not self.conn.poll(timeout_s):
                raise WorkerStartError(
                    f"math verifier process {self.proc.pid} did not start within {timeout_s:.0f} s "
                    "(LENS_MATH_STARTUP_TIMEOUT_S)"
                )
            msg = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(timeout=1)
            raise WorkerStartError(
                f"math verifier process {self.proc.pid} died while starting (exit code {self.proc.exitcode}); "
                f"can it import {self.module} and math_verify? Install the package (pip install -e .) "
                "or try LENS_MATH_MP_CONTEXT=spawn"
            ) from None
        if msg[0] != "ready":
            raise WorkerStartError(f"math verifier process {self.proc.pid} failed to start: {msg[1]}")
        self.ready = True

    def kill(self) -> None:
        """Kill this worker's process (the one this object started) and close the pipe."""
        try:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(timeout=5)
        except Exception:  # pragma: no cover - best effort
            pass
        try:
            self.conn.close()
        except Exception:  # pragma: no cover
            pass

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not within a second."""
        try:
            self.conn.send(None)
        except Exception:
            pass
        try:
            self.proc.join(timeout=1)
        except Exception:  # pragma: no cover
            pass
        self.kill()


class VerifierPool:
    """Math-Verify in worker processes with a hard per-answer deadline. Thread-safe.

    ``verify(gold, pred)`` scores one answer; ``verify_many(pairs)`` scores a batch in parallel across
    the workers. A worker that misses the deadline is killed and replaced; the answer gets
    ``Verdict(0.0, "timeout")``. ``stats`` counts ``killed`` and ``died`` workers.
    """

    # The worker processes' body: a module-level function with ``_worker_main``'s protocol (``(task_id, gold,
    # pred)`` in, ``(task_id, reason, seconds)`` out, reason "correct" scores 1). None: Math-Verify. Another
    # scorer (lens_openrlhf/rewards/gym_reward.py) subclasses the pool with its own.
    worker_target = None

    def __init__(self, config: Optional[RewardConfig] = None, **overrides):
        base = config or RewardConfig()
        if overrides:
            base = RewardConfig(**{**base.__dict__, **overrides})
        self.config = base.resolved()
        import multiprocessing

        self._ctx = multiprocessing.get_context(self.config.mp_context)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        self._task_ids = itertools.count()
        self._live: set = set()
        self._idle: "queue.Queue[_Worker]" = queue.Queue()
        self.stats = {"killed": 0, "died": 0, "started": 0}
        for _ in range(self.config.workers):
            self._idle.put(self._new_worker())
        self._executor = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="lens-math-verify")

    # -- worker bookkeeping
    def _new_worker(self) -> _Worker:
        w = _Worker(self._ctx, self.config.inner_timeout_s, self.worker_target)
        with self._lock:
            self._live.add(w)
            self.stats["started"] += 1
        return w

    def _replace(self, w: _Worker, why: str) -> _Worker:
        w.kill()
        with self._lock:
            self._live.discard(w)
            self.stats[why] += 1
        return self._new_worker()

    @property
    def worker_pids(self) -> list:
        with self._lock:
            return [w.proc.pid for w in self._live]

    # -- scoring
    def verify(self, gold: Optional[str], pred: str) -> Verdict:
        """Score one answer (``pred``: the boxed content) against ``gold`` within the deadline."""
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        w = self._idle.get()
        try:
            if not w.proc.is_alive():  # died while idle (e.g. killed from outside): start a fresh one
                w = self._replace(w, "died")
            try:
                w.wait_ready(self.config.startup_timeout_s)
            except WorkerStartError:
                w = self._replace(w, "died")
                raise
            task_id = next(self._task_ids)
            t0 = time.perf_counter()
            try:
                w.conn.send((task_id, gold, pred))
                if not w.conn.poll(self.config.timeout_s):
                    w = self._replace(w, "killed")
                    return Verdict(0.0, "timeout", time.perf_counter() - t0)
                got_id, reason, seconds = w.conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                logger.error("math verifier process %s died on an answer; replacing it", w.proc.pid)
                w = self._replace(w, "died")
                return Verdict(0.0, "worker_error", time.perf_counter() - t0)
            if got_id != task_id:  # cannot happen with one task in flight per worker; be safe
                w = self._replace(w, "died")
                return Verdict(0.0, "worker_error", time.perf_counter() - t0)
            return Verdict(1.0 if reason == "correct" else 0.0, reason, seconds)
        finally:
            self._idle.put(w)

    def verify_many(self, pairs: Iterable[tuple]) -> list:
        """Score ``[(gold, pred), ...]`` in parallel; returns one ``Verdict`` per pair, in order."""
        pairs = list(pairs)
        if len(pairs) <= 1 or self.config.workers == 1:
            return [self.verify(g, p) for g, p in pairs]
        futures = [self._executor.submit(self.verify, g, p) for g, p in pairs]
        return [f.result() for f in futures]

    # -- lifecycle
    def close(self) -> None:
        """Stop every worker process this pool started. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:  # a forked copy: the processes are not ours
            return
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            live = list(self._live)
            self._live.clear()
        for w in live:
            w.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ProcessPool:
    """One pool per process, made on first use by ``make()`` (again after a fork or a close). Thread-safe."""

    def __init__(self, make: Callable[[], VerifierPool]):
        self._make = make
        self._pool: Optional[VerifierPool] = None
        self._lock = threading.Lock()

    def get(self) -> VerifierPool:
        with self._lock:
            pool = self._pool
            if pool is None or pool._closed or pool._pid != os.getpid():
                self._pool = pool = self._make()
            return pool

    def shutdown(self) -> None:
        """Stop the pool's workers (those this process started)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


_PROCESS_POOL = ProcessPool(lambda: VerifierPool(RewardConfig.from_env()))
#: The process-wide pool, created on first use from ``RewardConfig.from_env()``.
get_pool = _PROCESS_POOL.get
#: Stop the process-wide pool's workers (also registered with ``atexit``).
shutdown_pool = _PROCESS_POOL.shutdown

atexit.register(shutdown_pool)
