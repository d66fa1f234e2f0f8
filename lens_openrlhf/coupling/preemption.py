"""Runs that survive preemption: on SIGTERM/SIGINT finish the step, checkpoint, stop the job's actors, exit.

A cluster preempts a job with SIGTERM (Kubernetes, SLURM, spot instances, ``ray job stop``) and, after a
grace period, SIGKILL. Without this module the driver of ``python -m lens_openrlhf.train_ppo_ray`` dies
inside ``ray.get`` (in a local Ray, Ray's own SIGTERM handler kills the raylet under the running job and the
core worker aborts: rc 134 after a C++ stack dump), the steps since the last periodic checkpoint are lost,
and the actors and vLLM engines outlive the driver until Ray notices (15-60 s here, GPU memory held on a
cluster). A SIGKILL is handled by OpenRLHF's own resume (``--ckpt.load_enable``); nothing here is needed
for it beyond ``--ckpt.save_steps``.

The training loop runs in the PPOTrainer Ray actor, not in the driver, so the stop request has to travel:

Driver (:class:`GracefulStop`, around OpenRLHF's ``train(args)`` in ``coupling.launch.main``)
  D1 After ``ray.init``: :class:`RunControl`, a tiny named actor of this job (``num_cpus=0``; the job's
     worker hook skips its process, so it imports no OpenRLHF/vLLM). Why an actor:
     the trainer is busy in ``fit()`` (a method call on it would queue behind ``fit``), a file needs a
     filesystem shared by the driver's and the trainer's nodes, and ``ray.cancel`` interrupts at an
     arbitrary point (mid optimizer step); a named actor is public Ray API, reachable from any node of the
     job, and one round trip per training step (about a millisecond) is the whole cost.
  D2 SIGTERM and SIGINT handlers (replacing Ray's). First signal: one line on stderr, and the stop request
     goes to RunControl (from a thread: the handler runs inside ``ray.get``). If the trainer has not started
     ``fit()`` yet (models still loading), the driver stops at once: no step since the last checkpoint
     exists. A second signal abandons the step in progress at once (the last checkpoint stays valid).
  D3 On the way out of ``train(args)``, whatever the cause: ``ray.kill`` of every actor the trainer
     registered (policy/reference/reward/critic ranks, vLLM engines, the trainer), then RunControl, then
     ``ray.shutdown()``. After a signal the process exits with 128 + the signal number (143 SIGTERM,
     130 SIGINT: "terminated by that signal" for shells, SLURM and Kubernetes) and one line saying which
     checkpoint was written and how to resume.

Trainer (patches of the pinned OpenRLHF's ``BasePPOTrainer``, installed in every Ray worker through the
worker hook and in the driver; entries T1, T2 of ``coupling.patches.COUPLING``)
  T1 ``init_checkpoint_states`` (the first thing ``PPOTrainer.fit`` does; ``PPOTrainerAsync.fit`` calls it on
     its TrainingActor): the original, then the actor handles are registered with RunControl; if a stop is
     already requested, :class:`StopRequested` is raised: nothing was trained since the checkpoint it loaded.
  T2 ``save_logs_and_checkpoints`` (called once per training step with that step's ``client_states``:
     episode, global_step, total_consumed_prompts, the dataloader state): one round trip to RunControl; on
     a stop request ``ckpt.save_steps`` is set to 1 for this call so that OpenRLHF's own save path writes
     ``global_step<N>`` (each actor rank's DeepSpeed ``save_checkpoint``: weights, optimizer, scheduler, and
     the client states), the trackers are closed (TensorBoard flushed), then :class:`StopRequested` ends
     ``fit()``. The step in progress when the signal came is therefore finished, not lost; the evaluation
     OpenRLHF would run after it is skipped.

Drift: T1 and T2 are entries of the one patch table (``coupling.patches``) with the upstream call sites they rely
on (``call_sites``, checked in the installed OpenRLHF's source by tests/test_patch_table.py) and the fingerprints of
what they watch, and the launcher refuses any OpenRLHF other than the pinned release (``coupling.version``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Dict, List, Optional

from .. import patching
from . import rollout_seeds

PREFIX = "lens_openrlhf.train_ppo_ray"
#: env var of the RunControl worker (see ``coupling.launch.ray_worker_setup``)
ENV_NO_WORKER_PATCHES = "LENS_OPENRLHF_NO_WORKER_PATCHES"
CONTROL_NAME = "lens_openrlhf_run_control"


class StopRequested(Exception):
    """Raised in the trainer actor to end ``fit()`` after a stop request (carries what was saved)."""

    def __init__(self, reason: str = "", step: int = 0, saved: bool = False, ckpt_dir: str = "", tag: str = ""):
        super().__init__(reason, step, saved, ckpt_dir, tag)
        self.reason, self.step, self.saved, self.ckpt_dir, self.tag = reason, step, saved, ckpt_dir, tag

    def __str__(self) -> str:
        if self.saved:
            return f"stopped ({self.reason}) after global step {self.step}; checkpoint {self.tag} in {self.ckpt_dir}"
        return f"stopped ({self.reason}) at global step {self.step}; nothing trained since the last checkpoint"


# ----------------------------------------------------------------------------------------------------
# D1: the control actor
# ----------------------------------------------------------------------------------------------------
class RunControl:
    """The stop flag, the trainer's progress and the handles of the job's actors (one per job)."""

    def __init__(self):
        self.reason: Optional[str] = None
        self.fitting = False
        self.step = 0
        self.handles: List = []
        self.result: Optional[dict] = None

    def request_stop(self, reason: str) -> dict:
        if self.reason is None:
            self.reason = reason
        return {"fitting": self.fitting, "step": self.step}

    def begin_fit(self, handles: List, step: int) -> Optional[str]:
        self.fitting, self.handles, self.step = True, list(handles), step
        return self.reason

    def step_done(self, step: int) -> Optional[str]:
        self.step = step
        return self.reason

    def stopped(self, result: dict) -> None:
        self.result = result

    def state(self) -> dict:
        return {
            "reason": self.reason,
            "fitting": self.fitting,
            "step": self.step,
            "result": self.result,
            "n_handles": len(self.handles),
        }

    def get_handles(self) -> List:
        return self.handles


def _job_control():
    """RunControl of this job, or None (a run not started through lens_openrlhf's main, a unit test)."""
    import ray

    cached = _STATE.get("control")
    if cached is not None:
        return cached
    if not ray.is_initialized():  # not in a Ray job: ray.get_actor would start (or join) a Ray cluster itself
        return None
    try:
        handle = ray.get_actor(CONTROL_NAME)
    except ValueError:
        return None
    _STATE["control"] = handle
    return handle


_STATE: Dict[str, object] = {}


# ----------------------------------------------------------------------------------------------------
# T1, T2: the trainer side
# ----------------------------------------------------------------------------------------------------
def _job_actor_handles(trainer) -> List:
    import ray

    handles = []
    for name in ("actor_model_group", "critic_model_group", "reward_model_group", "reference_model_group"):
        group = getattr(trainer, name, None)
        handles.extend(getattr(group, "_actor_handlers", None) or [])
    handles.extend(getattr(trainer, "vllm_engines", None) or [])
    try:
        handles.append(ray.get_runtime_context().current_actor)
    except Exception:  # noqa: BLE001 - not inside an actor (a unit test): nothing to register
        pass
    return handles


def _close_trackers(trainer) -> None:
    for name in ("wandb_logger", "tensorboard_logger"):
        tracker = getattr(trainer, name, None)
        if tracker is not None:
            tracker.close()
            setattr(trainer, name, None)


def init_checkpoint_states(self):
    """T1: ``BasePPOTrainer.init_checkpoint_states`` + registration with RunControl (see module docstring)."""
    import ray

    states = patching.original("coupling", "T1")(self)
    if rollout_seeds.seeded(getattr(self, "args", None)):
        rollout_seeds.on_fit_start(self, states)  # prompt shuffle seeded; seeds continue at the prompts drawn
    control = _job_control()
    if control is not None:
        step = int(states.get("global_step", 0) or 0)
        handles = _job_actor_handles(self)
        reason = ray.get(control.begin_fit.remote(handles, step))
        print(
            f"[lens_openrlhf] SIGTERM/SIGINT will checkpoint and stop this run ({len(handles)} actors "
            f"registered; resuming from global step {step})",
            flush=True,
        )
        if reason:
            _close_trackers(self)
            raise StopRequested(reason, step=step, saved=False)
    return states


def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
    """T2: ``BasePPOTrainer.save_logs_and_checkpoints``; on a stop request, checkpoint this step and stop."""
    import ray

    if client_states is not None and rollout_seeds.seeded(getattr(self, "args", None)):
        client_states = rollout_seeds.with_seed_record(self, client_states)  # the seeding, saved with the checkpoint
    control = _job_control()
    reason = ray.get(control.step_done.remote(global_step)) if control is not None else None
    if not reason:
        return patching.original("coupling", "T2")(self, global_step, logs_dict, client_states)
    ckpt = self.args.ckpt
    every = ckpt.save_steps
    ckpt.save_steps = 1  # OpenRLHF saves when global_step % save_steps == 0
    t0 = time.time()
    try:
        patching.original("coupling", "T2")(self, global_step, logs_dict, client_states)
    finally:
        ckpt.save_steps = every
    _close_trackers(self)
    saved = not getattr(ckpt, "disable_ds", False)
    ckpt_dir = os.path.join(ckpt.path, "_actor")
    result = {
        "reason": reason,
        "step": int(global_step),
        "saved": saved,
        "ckpt_dir": ckpt_dir,
        "tag": f"global_step{global_step}",
        "save_seconds": round(time.time() - t0, 2),
    }
    ray.get(control.stopped.remote(result))
    raise StopRequested(reason, step=int(global_step), saved=saved, ckpt_dir=ckpt_dir, tag=result["tag"])


def trainer_classes() -> List[type]:
    """BasePPOTrainer and the classes behind the ``@ray.remote`` trainers that inherit from it: where T1/T2
    are set (:func:`lens_openrlhf.patching.ray_actor_classes` says why a patch of BasePPOTrainer alone never
    reaches the PPOTrainer actor)."""
    from openrlhf.trainer import ppo_trainer, ppo_trainer_async

    classes = [ppo_trainer.BasePPOTrainer]
    for actor_class in (ppo_trainer.PPOTrainer, ppo_trainer_async.TrainingActor):
        classes += patching.ray_actor_classes(actor_class)
    return classes


# ----------------------------------------------------------------------------------------------------
# D2, D3: the driver side
# ----------------------------------------------------------------------------------------------------
def _find_stop(exc: BaseException) -> Optional[StopRequested]:
    """The StopRequested behind a RayTaskError (Ray re-raises the trainer's exception as a subclass)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StopRequested):
            return exc
        cause = getattr(exc, "cause", None)
        if isinstance(cause, StopRequested):
            return cause
        exc = cause or exc.__cause__ or exc.__context__
    return None


class GracefulStop:
    """Context manager around ``train(args)`` in the driver (D1-D3 of the module docstring).

    ``with GracefulStop(args): train(args)``: on SIGTERM/SIGINT raises ``SystemExit(128 + signum)`` after the
    trainer has checkpointed the step and the job's actors are stopped; on a normal end (or an error) the
    actors are stopped too and the outcome is unchanged.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, args, stream=None):
        self.args = args
        self.stream = stream or sys.stderr
        self.signum: Optional[int] = None
        self.abandon = False
        self.closing = False
        self.control = None
        self._previous = {}
        self._t_signal = None

    # -- set-up ---------------------------------------------------------------------------------------
    def __enter__(self):
        import ray

        self.control = (
            ray.remote(RunControl)
            .options(
                name=CONTROL_NAME,
                num_cpus=0,
                runtime_env={"env_vars": {ENV_NO_WORKER_PATCHES: "1"}},  # a light process: no OpenRLHF/vLLM imports
            )
            .remote()
        )
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def _say(self, text: str) -> None:
        print(f"{PREFIX}: {text}", file=self.stream, flush=True)

    def _on_signal(self, signum, frame):
        if self.closing:
            return
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum, self._t_signal = signum, time.time()
            self._say(
                f"{name} received: finishing the current training step, writing a checkpoint, then stopping "
                f"(send {name} again to abandon the step at once)"
            )
            threading.Thread(target=self._request_stop, args=(name,), daemon=True).start()
            return
        self.abandon = True
        raise KeyboardInterrupt(name)  # interrupts the ray.get the main thread is in

    def _request_stop(self, name: str) -> None:
        import _thread

        import ray

        try:
            state = ray.get(self.control.request_stop.remote(name), timeout=60)
        except Exception as e:  # noqa: BLE001 - cannot reach RunControl: stop at once
            self._say(f"could not pass the stop request to the trainer ({type(e).__name__}: {e}); stopping at once")
            state = {"fitting": False}
        if not state.get("fitting"):
            self.abandon = True
            _thread.interrupt_main(self.signum)  # -> _on_signal again in the main thread -> KeyboardInterrupt

    # -- tear-down ------------------------------------------------------------------------------------
    def __exit__(self, exc_type, exc, tb):
        import ray

        self.closing = True
        stop = _find_stop(exc) if exc is not None else None
        state = {}
        try:
            state = ray.get(self.control.state.remote(), timeout=30)
            handles = ray.get(self.control.get_handles.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - RunControl gone: ray.shutdown below still ends the job
            handles = []
        t0 = time.time()
        for h in handles + [self.control]:
            try:
                ray.kill(h, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        ray.shutdown()
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        stop_seconds = time.time() - t0
        if self.signum is None:
            return False  # no signal: the outcome of train(args) is unchanged
        name = signal.Signals(self.signum).name
        code = 128 + self.signum
        ckpt = self.args.ckpt
        resume = f"resume with the same command plus --ckpt.load_enable (--ckpt.path {ckpt.path})"
        if exc is None:
            self._say(f"{name} received after training had finished; the run completed (exit 0)")
            return False
        if stop is not None and stop.saved:
            msg = (
                f"stopped by {name} after global step {stop.step}: checkpoint {stop.tag} written to "
                f"{stop.ckpt_dir} (model, optimizer, scheduler, consumed prompts); {len(handles)} actors "
                f"stopped in {stop_seconds:.1f} s; {resume}"
            )
        elif stop is not None:
            msg = f"stopped by {name} before the first training step of this run (nothing to save); {resume}"
        elif not state.get("fitting"):
            msg = f"stopped by {name} before training began (nothing to save); {resume}"
        else:
            last = state.get("step", 0)
            msg = (
                f"stopped by {name} without finishing the step after global step {last} (second signal): "
                f"that step is lost; the latest checkpoint in {os.path.join(ckpt.path, '_actor')} is kept; "
                f"{resume}"
            )
        self._say(msg)
        raise SystemExit(code) from None
