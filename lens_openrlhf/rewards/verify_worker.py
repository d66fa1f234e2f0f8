"""The verifier's worker-process side: the protocol loop every scorer runs (:func:`serve_worker`) and the
Math-Verify scorer (:func:`verify_answer`), which runs in a process's main thread with Math-Verify's own
signal timeouts ON.

The parent side (the pool that starts these processes, enforces the outer deadline and replaces a stuck
worker) is :mod:`lens_openrlhf.rewards.verifier`. :func:`gold_is_parseable` is also used by
``lens_openrlhf.data`` to report labels the verifier could only string-compare.

Imports neither torch nor Math-Verify at import time (worker processes import this module by name and must
stay light); Math-Verify is imported where it is called.
"""

import logging
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

from lens_openrlhf.rewards.answers import _as_math


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


def serve_worker(
    conn, setup: Callable[[], None], score: Callable[[Any, str], str], name: str, startup_prefix: str = ""
) -> None:
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
    import importlib

    importlib.import_module("math_verify")  # the import cost is paid before "ready"
    _install_timeout_flag()


def _worker_main(conn, inner_timeout_s: int) -> None:
    """Body of a verifier process: Math-Verify behind :func:`serve_worker`."""
    serve_worker(
        conn, _math_verify_setup, lambda gold, pred: verify_answer(gold, pred, inner_timeout_s), "lens math verifier"
    )
