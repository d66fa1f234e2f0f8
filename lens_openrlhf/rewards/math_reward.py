"""Math-Verify reward for OpenRLHF 0.11.2, with a per-answer time limit that really holds.

Use it as OpenRLHF's reward function::

    --reward.remote_url /path/to/lens_openrlhf/rewards/math_reward.py

OpenRLHF loads this file by path and calls ``reward_func(queries, prompts, labels)`` through
``asyncio.to_thread`` inside an async Ray actor: NOT the main thread, where Math-Verify's
``signal.alarm`` timeouts raise ``ValueError``, and where a thread cannot interrupt an answer such as
``\\boxed{9^{9^{9^{9^9}}}}`` (with its timeouts off, Math-Verify held the GIL for over a minute on it).

How an answer is scored
-----------------------
1. The response is the query minus its prompt (``query[len(prompt):]`` when the query starts with the
   prompt; else the text after the prompt's first occurrence; else the whole query, counted as
   ``reward/prompt_not_prefix``).
2. The answer is the content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``) of the response, braces
   balanced (``\\{`` and ``\\}`` are text, not structure). ``\\boxed 5`` (no braces) is read too.
3. Math-Verify compares it with the label: gold ``parse("$" + label + "$")``, prediction
   ``parse("$" + answer + "$")``, then ``verify(gold, pred)`` (order matters: gold first). A label that
   itself contains a ``\\boxed{}`` is reduced to that box first.
4. Score 1.0 when correct, else 0.0. Every answer gets exactly one reason, and each reason is a
   per-sample 0/1 tensor in ``extra_logs`` (``reward/<reason>``; OpenRLHF logs their means):

   ``correct``      verified equal
   ``wrong``        parsed, compared, not equal
   ``no_boxed``     the response has no (closed) ``\\boxed{}``
   ``empty_boxed``  the last box is empty
   ``parse_error``  Math-Verify extracted no mathematical expression from the answer
   ``gold_error``   the label is empty or Math-Verify could not parse it (and strings differ)
   ``timeout``      the answer ran out of time (Math-Verify's own timeout, or the outer deadline)
   ``worker_error`` the verifier process died or could not start (logged at ERROR)

The time limit
--------------
Math-Verify runs in a small pool of worker PROCESSES (multiprocessing ``forkserver`` context by
default): in each, Math-Verify runs in the process's main thread with its own signal timeouts ON
(``inner_timeout_s`` per parse/compare). On top of that each answer has an outer deadline
(``timeout_s``, measured from the moment a worker receives it): a worker still busy then is killed
(only that process, which this module started) and replaced, and the answer scores 0 with reason
``timeout``. Other answers of the batch run on the other workers meanwhile.

Configuration (environment variables, read when the pool is first used):

``LENS_MATH_TIMEOUT_S``          outer deadline per answer, seconds (default 5)
``LENS_MATH_INNER_TIMEOUT_S``    Math-Verify's own timeout per parse/compare, whole seconds
                                 (default ``max(1, ceil(timeout_s) - 1)``: 4 s for the default 5 s)
``LENS_MATH_WORKERS``            worker processes (default ``min(8, max(2, n_cpus // 2))``)
``LENS_MATH_MP_CONTEXT``         ``forkserver`` (default) or ``spawn``
``LENS_MATH_STARTUP_TIMEOUT_S``  how long a worker may take to start (default 120)

This module imports neither torch nor Math-Verify at import time (the worker processes import it
and must stay light); torch is imported inside ``reward_func``. It has no ``from __future__ import
annotations``: OpenRLHF execs the file without registering it in ``sys.modules``, and dataclasses with
string annotations then fail to build.
"""

import atexit
import itertools
import logging
import math
import os
import queue
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

logger = logging.getLogger(__name__)

REASONS = (
    "correct",
    "wrong",
    "no_boxed",
    "empty_boxed",
    "parse_error",
    "gold_error",
    "timeout",
    "worker_error",
)

_CANONICAL_NAME = "lens_openrlhf.rewards.math_reward"

# ---------------------------------------------------------------------------------------------------
# Text handling (pure Python, cheap: runs in the caller's process)
# ---------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _balanced_group(text: str, start: int) -> Optional[int]:
    """Given ``text[start] == "{"``, return the index just past its matching ``}`` (or None).

    ``\\{`` / ``\\}`` are escaped braces (text), and ``\\\\`` is skipped as a unit so that ``\\\\}`` is
    a line break followed by a structural ``}``.
    """
    depth = 0
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # skips "\{", "\}", "\\" and any other "\x": none of them is structure
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def extract_last_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or None if there is none.

    Returns ``""`` for an empty box. A last box whose braces never close (a truncated response) counts
    as no box: None. ``\\boxed 42`` (no braces) gives ``"42"`` (up to whitespace or ``$``).
    """
    if not text:
        return None
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    i = m.end()
    n = len(text)
    j = i
    while j < n and text[j] in " \t\n":
        j += 1
    if j < n and text[j] == "{":
        end = _balanced_group(text, j)
        if end is None:
            return None
        return text[j + 1 : end - 1].strip()
    if j > i:  # "\boxed 42": one token
        k = j
        while k < n and not text[k].isspace() and text[k] != "$":
            k += 1
        return text[j:k].strip()
    return None


def split_response(query: str, prompt: str) -> tuple[str, bool]:
    """The response part of an OpenRLHF query (prompt + response) and whether the prompt was found."""
    if not prompt:
        return query, True
    if query.startswith(prompt):
        return query[len(prompt) :], True
    pos = query.find(prompt)
    if pos >= 0:
        return query[pos + len(prompt) :], True
    return query, False


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def _as_math(text: str) -> str:
    """``text`` as Math-Verify input: unescaped ``$`` removed, then wrapped in ``$...$``."""
    return "$" + _UNESCAPED_DOLLAR.sub("", text).strip() + "$"


def normalize_label(label: Any) -> Optional[str]:
    """The gold answer string of a label: str() of it, reduced to its last box if it has one.

    Returns None for a missing or empty label.
    """
    if label is None:
        return None
    if isinstance(label, float) and label != label:  # NaN from a pandas-made file
        return None
    text = str(label).strip()
    if _BOX_RE.search(text):
        boxed = extract_last_boxed(text)
        if boxed is not None:
            text = boxed
    text = _UNESCAPED_DOLLAR.sub("", text).strip()
    return text or None


# ---------------------------------------------------------------------------------------------------
# Worker process side (runs in the process's main thread, Math-Verify timeouts ON)
# ---------------------------------------------------------------------------------------------------


class _TimeoutFlag(logging.Handler):
    """Notices Math-Verify's "Timeout during ..." warnings (it swallows the exception itself)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.hit = False

    def emit(self, record):  # noqa: D401 - logging API
        try:
            if str(record.msg).startswith("Timeout during"):
                self.hit = True
        except Exception:  # pragma: no cover - never let logging break scoring
            pass


_FLAG: Optional[_TimeoutFlag] = None
_GOLD_CACHE: dict = {}
_GOLD_CACHE_MAX = 4096


def _install_timeout_flag() -> _TimeoutFlag:
    global _FLAG
    if _FLAG is None:
        mv_logger = logging.getLogger("math_verify")
        _FLAG = _TimeoutFlag()
        mv_logger.addHandler(_FLAG)
        mv_logger.setLevel(logging.WARNING)
        mv_logger.propagate = False  # keep worker stderr quiet; the reason is reported instead
    return _FLAG


def _has_expression(parsed: Sequence[Any]) -> bool:
    """Whether a Math-Verify parse result holds a SymPy object (not only the raw string fallback)."""
    return any(not isinstance(x, str) for x in parsed)


def parse_gold(gold: str, inner_timeout_s: int = 5) -> list:
    """Math-Verify parse of a gold answer, ``parse("$" + gold + "$")``. Main thread only."""
    from math_verify import parse

    return parse(_as_math(gold), parsing_timeout=inner_timeout_s)


def gold_is_parseable(gold: Optional[str], inner_timeout_s: int = 5) -> bool:
    """Whether Math-Verify extracts a mathematical expression from ``gold``. Main thread only.

    Used by ``lens_openrlhf.data`` to report labels the verifier could only string-compare.
    """
    if not gold:
        return False
    return _has_expression(parse_gold(gold, inner_timeout_s))


def verify_answer(gold: Optional[str], pred: str, inner_timeout_s: int) -> str:
    """Score one (gold, predicted answer) pair with Math-Verify; returns a reason from ``REASONS``.

    Must run in a main thread (Math-Verify's signal timeouts); the pool's workers call it.
    """
    from math_verify import parse, verify

    flag = _install_timeout_flag()
    if not gold:
        return "gold_error"
    gold_parsed = _GOLD_CACHE.get((gold, inner_timeout_s))
    if gold_parsed is None:
        flag.hit = False
        gold_parsed = parse(_as_math(gold), parsing_timeout=inner_timeout_s)
        if len(_GOLD_CACHE) >= _GOLD_CACHE_MAX:
            _GOLD_CACHE.clear()
        _GOLD_CACHE[(gold, inner_timeout_s)] = gold_parsed
    if not gold_parsed:
        return "gold_error"

    flag.hit = False
    pred_parsed = parse(_as_math(pred), parsing_timeout=inner_timeout_s)
    if flag.hit:
        return "timeout"
    if not pred_parsed:
        return "parse_error"
    ok = verify(gold_parsed, pred_parsed, timeout_seconds=inner_timeout_s)
    if ok:
        return "correct"
    if flag.hit:
        return "timeout"
    if not _has_expression(gold_parsed):
        return "gold_error"
    if not _has_expression(pred_parsed):
        return "parse_error"
    return "wrong"


def serve_worker(conn, setup: Callable[[], None], score: Callable[[Any, str], str], name: str, startup_prefix: str = "") -> None:
    """The worker side of :class:`VerifierPool`'s protocol, for every scorer: ``setup()`` (imports paid before
    "ready"; an exception is reported as ``startup_error``), then ``(task_id, gold, pred)`` ->
    ``(task_id, score(gold, pred), seconds)`` until ``None`` or EOF. A scorer that raises on one answer gives
    ``worker_error`` for that answer only."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    try:
        setup()
        conn.send(("ready", os.getpid()))
    except BaseException as e:  # report why, then exit
        try:
            conn.send(("startup_error", f"{startup_prefix}{type(e).__name__}: {e}"))
        finally:
            return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, gold, pred = msg
        t0 = time.perf_counter()
        try:
            reason = score(gold, pred)
        except Exception as e:  # the scorer raised on this answer (Math-Verify despite raise_on_error=False)
            reason = "worker_error"
            try:
                sys.stderr.write(f"[{name}] {type(e).__name__}: {e}\n")
            except Exception:
                pass
        try:
            conn.send((task_id, reason, time.perf_counter() - t0))
        except (BrokenPipeError, OSError):
            return


def _math_verify_setup() -> None:
    import math_verify  # noqa: F401  (import cost paid before "ready")

    _install_timeout_flag()


def _worker_main(conn, inner_timeout_s: int) -> None:
    """Body of a verifier process: Math-Verify behind :func:`serve_worker`."""
    serve_worker(conn, _math_verify_setup, lambda gold, pred: verify_answer(gold, pred, inner_timeout_s), "lens math verifier")


# ---------------------------------------------------------------------------------------------------
# Parent side: the pool
# ---------------------------------------------------------------------------------------------------


class WorkerStartError(RuntimeError):
    """A verifier process could not start (e.g. it cannot import Math-Verify or this package)."""


class VerifierUnavailable(RuntimeError):
    """The verifier cannot run at all (a bad ``LENS_MATH_*`` setting, workers that cannot start, Math-Verify
    missing). ``reward_func`` raises it instead of scoring every answer 0: under LENS an all-zero batch is
    all-negative groups that still train the model."""


@dataclass(frozen=True)
class Verdict:
    """The result for one answer: ``score`` 1.0/0.0, its ``reason``, and worker seconds spent."""

    score: float
    reason: str
    seconds: float = 0.0


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
                f"LENS_MATH_STARTUP_TIMEOUT_S / startup_timeout_s must be a finite number > 0, got {self.startup_timeout_s!r}"
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
    def from_env(cls, environ: Optional[dict] = None, prefix: str = "LENS_MATH", workers: Optional[int] = None) -> "RewardConfig":
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
        self.proc = ctx.Process(
            target=target or _worker_main, args=(child_conn, inner_timeout_s), daemon=True, name="lens-math-verify"
        )
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
                f"can it import {_CANONICAL_NAME} and math_verify? Install the package (pip install -e .) "
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


# ---------------------------------------------------------------------------------------------------
# Public scoring API
# ---------------------------------------------------------------------------------------------------


def score_responses(
    responses: Sequence[str], labels: Sequence[Any], pool: Optional[VerifierPool] = None
) -> list:
    """Score model responses (text after the prompt) against labels; one ``Verdict`` each.

    Boxed extraction happens here; only answers that have a non-empty box go to the workers.
    Raises ``WorkerStartError`` when the verifier processes cannot start.
    """
    if len(responses) != len(labels):
        raise ValueError(f"{len(responses)} responses but {len(labels)} labels")
    verdicts: list = [None] * len(responses)
    todo_idx, todo = [], []
    for i, (resp, label) in enumerate(zip(responses, labels)):
        boxed = extract_last_boxed(resp if isinstance(resp, str) else "")
        if boxed is None:
            verdicts[i] = Verdict(0.0, "no_boxed")
        elif not _UNESCAPED_DOLLAR.sub("", boxed).strip():
            verdicts[i] = Verdict(0.0, "empty_boxed")
        else:
            gold = normalize_label(label)
            if gold is None:
                verdicts[i] = Verdict(0.0, "gold_error")
            else:
                todo_idx.append(i)
                todo.append((gold, boxed))
    if todo:
        results = (pool or get_pool()).verify_many(todo)
        for i, v in zip(todo_idx, results):
            verdicts[i] = v
    return verdicts


def reward_func(queries, prompts, labels, *, pool: Optional[VerifierPool] = None) -> dict:
    """OpenRLHF's ``reward_func``: Math-Verify correctness of the last boxed answer, 1.0 or 0.0.

    Args:
        queries: prompt + response strings (as OpenRLHF decodes them).
        prompts: the prompts (used to cut the response out of the query).
        labels: gold answers (``--data.label_key``).
        pool: a ``VerifierPool`` to use instead of the process-wide one (tests, benchmarks).

    Returns:
        ``{"rewards": float tensor [B], "scores": same, "extra_logs": {...}}`` where ``extra_logs``
        holds per-sample float tensors ``reward/<reason>`` (0/1, one reason per sample),
        ``reward/prompt_not_prefix`` (0/1) and ``reward/verify_seconds``.

    One answer's failure scores 0 with its reason counted (``timeout``, ``worker_error``, ...). When the
    verifier cannot run at all, raises :class:`VerifierUnavailable` naming the cause: scoring every answer
    0 would still train the model under LENS.
    """
    def score(responses, labels):
        try:
            return score_responses(responses, labels, pool=pool)
        except Exception as e:  # per-answer failures are verdicts; what reaches here is the verifier itself
            raise VerifierUnavailable(
                f"lens math reward: the Math-Verify verifier cannot run ({type(e).__name__}: {e}). Stopping instead "
                "of scoring every answer 0, which under LENS would still train the model"
            ) from e

    return outcome_reward(queries, prompts, labels, score, REASONS)


def outcome_reward(queries, prompts, labels, score, reasons: Sequence[str]) -> dict:
    """The body every reward file shares: cut each response out of its query, ``score(responses, labels)``
    -> one :class:`Verdict` each, and build OpenRLHF's reward dict with one ``reward/<reason>`` 0/1 tensor per
    reason, ``reward/prompt_not_prefix`` and ``reward/verify_seconds``."""
    import torch

    queries = list(queries)
    prompts = list(prompts) if prompts is not None else [""] * len(queries)
    labels = list(labels) if labels is not None else [None] * len(queries)
    if not (len(queries) == len(prompts) == len(labels)):
        raise ValueError(f"reward_func: {len(queries)} queries, {len(prompts)} prompts, {len(labels)} labels")

    responses, not_prefix = [], []
    for q, p in zip(queries, prompts):
        resp, found = split_response(q if isinstance(q, str) else "", p if isinstance(p, str) else "")
        responses.append(resp)
        not_prefix.append(0.0 if found else 1.0)
    verdicts = score(responses, labels)
    rewards = torch.tensor([v.score for v in verdicts], dtype=torch.float32)
    extra_logs = {
        f"reward/{r}": torch.tensor([1.0 if v.reason == r else 0.0 for v in verdicts], dtype=torch.float32)
        for r in reasons
    }
    extra_logs["reward/prompt_not_prefix"] = torch.tensor(not_prefix, dtype=torch.float32)
    extra_logs["reward/verify_seconds"] = torch.tensor([v.seconds for v in verdicts], dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": extra_logs}


# ---------------------------------------------------------------------------------------------------
# Loaded by file path (OpenRLHF's --reward.remote_url x.py): use the package module instead, so the
# worker processes (which import their target by module name) and the pool singleton are shared.
# ---------------------------------------------------------------------------------------------------
if __name__ != _CANONICAL_NAME:
    _root = str(Path(__file__).resolve().parents[2])
    if _root not in sys.path:
        sys.path.insert(0, _root)
    import importlib as _importlib

    atexit.unregister(shutdown_pool)  # this copy's pool is never used; the canonical module has its own
    _canonical = _importlib.import_module(_CANONICAL_NAME)
    reward_func = _canonical.reward_func  # noqa: F811
    score_responses = _canonical.score_responses  # noqa: F811
    extract_last_boxed = _canonical.extract_last_boxed  # noqa: F811
    get_pool = _canonical.get_pool  # noqa: F811
    shutdown_pool = _canonical.shutdown_pool  # noqa: F811
    VerifierPool = _canonical.VerifierPool  # noqa: F811
    VerifierUnavailable = _canonical.VerifierUnavailable  # noqa: F811
