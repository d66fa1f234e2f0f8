"""PSR and NSR train on the kept class only, as seed 003's code does (patches A1 + B1), on OpenRLHF's real classes.

Worker processes (this file run as a script) build OpenRLHF 0.11.2's own training stack on CPU: DeepspeedStrategy
(gloo, ZeRO-2, fp32), its Actor, ActorPPOTrainer with its PolicyLoss and NaiveReplayBuffer, and the real
RemoteExperienceMaker for the advantages, with the coupling table installed. One rank runs PPO steps on toy
rollouts of 10 samples at accuracies 0.2, 0.5 and 0.8 for PSR and NSR under both ``--actor.loss_agg_mode``
values (micro-batches of 2, 2 per optimizer step), back to back on one engine; two ranks (data parallel) run
three of them, each rank fed the experience A1 gives it. Every optimizer step records DeepSpeed's full
gradient (before clipping), the weights it was computed at, and the samples of its micro-batches.

The tests recompute every step's gradient independently, with a plain Hugging Face forward at the recorded
weights and the PPO-clip objective written out here, over the kept class only (selected from the rewards:
the correct samples with A = +1 for PSR, the incorrect ones with A = -1 for NSR), normalised by the window's
token count (token-mean) or sample count (seq-mean-token-mean); and check that each PPO step trains on exactly
the kept samples, once, in ceil(ceil(K / micro) / gas) optimizer steps: the last, shorter window makes its own
step and nothing of it leaks into the next PPO step. A control runs OpenRLHF's own loop (B1 reverted) to show
what B1 changes: there the kept class's gradient is scaled by its share of the window's tokens.
"""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cpu_jobs import job_argv

pytestmark = pytest.mark.heavy  # Ray, vLLM, DeepSpeed or a training job (make test-quick leaves it out)

MICRO, TRAIN_BATCH, G, PROMPTS = 2, 4, 5, 2  # gas = 4 / 2 = 2 micro-batches per optimizer step (dp = 1)
ACCURACIES = (0.2, 0.5, 0.8)
CLIP = 0.2
CASES = [
    (name, mode, acc) for mode in ("token-mean", "seq-mean-token-mean") for name in ("psr", "nsr") for acc in ACCURACIES
]


#: the control: OpenRLHF's own ppo_train (B1 reverted) on NSR at accuracy 0.75, 8 samples (4 micro-batches, 2
#: full windows): the dropped class stays in the batch with A = 0 and in the token-mean's denominator
CONTROL = ("nsr", "token-mean", 0.75, 8)
#: two data-parallel ranks (gas 2 again: --train.batch_size 8): K odd (one left over) and a short window
DP_CASES = [("psr", "token-mean", 0.5, 10), ("nsr", "token-mean", 0.2, 10), ("nsr", "seq-mean-token-mean", 0.5, 10)]


def toy_rewards(acc: float, seed: int, n: int = PROMPTS * G) -> torch.Tensor:
    """``[n]`` rewards with round(acc * n) ones, at random places."""
    g = torch.Generator().manual_seed(seed)
    r = torch.zeros(n)
    r[torch.randperm(n, generator=g)[: round(acc * n)]] = 1.0
    return r


# ------------------------------------------------------------------------------------------------
# The worker: OpenRLHF's real classes
# ------------------------------------------------------------------------------------------------
def _toy_experiences(actor, rewards, vocab, seed):
    """Two Experiences of B / 2 samples (prompt 3 tokens, response 2..6 tokens, right padding), pi_old = the actor's
    log-probs plus noise (so that PPO's clip is active on some tokens)."""
    from openrlhf.trainer.ppo_utils.experience import Experience

    g = torch.Generator().manual_seed(seed)
    B = len(rewards)
    resp = torch.randint(2, 7, (B,), generator=g)
    T = 3 + int(resp.max())
    seq = torch.randint(3, vocab, (B, T), generator=g)
    att = (torch.arange(T).unsqueeze(0) < (3 + resp).unsqueeze(1)).long()
    seq = seq * att
    action_mask = torch.zeros(B, T - 1, dtype=torch.bool)
    for i in range(B):
        action_mask[i, 2 : 2 + int(resp[i])] = True  # log-prob at t predicts token t + 1: response tokens 3..
    with torch.no_grad():
        actor.eval()
        lp = actor(seq, action_mask, attention_mask=att)
        actor.train()
    old = (lp + 0.3 * torch.randn(lp.shape, generator=g)) * action_mask
    exps = []
    for ids in (list(range(0, B // 2)), list(range(B // 2, B))):
        idx = torch.tensor(ids)
        exps.append(
            Experience(
                index=ids,
                sequences=seq[idx],
                attention_mask=att[idx],
                action_mask=action_mask[idx],
                action_log_probs=old[idx],
                kl=torch.zeros(len(ids), T - 1),
                rewards=rewards[idx].clone(),
                response_length=resp[idx].float(),
                total_length=(3 + resp[idx]).float(),
                info={"reward": rewards[idx].clone()},
            )
        )
    return exps


def worker(out_dir: str, world: int) -> None:
    """One policy rank (``RANK`` in the environment) of a data-parallel world of ``world`` ranks."""
    from types import SimpleNamespace

    out = Path(out_dir)
    rank = int(os.environ["RANK"])
    os.environ.update(MASTER_ADDR="127.0.0.1", WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from lens_openrlhf import coupling as A
    from lens_openrlhf import cpu

    cpu.install()
    A.install_patches()
    from deepspeed.utils import safe_get_full_grad
    from openrlhf.models import Actor
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
    from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer
    from openrlhf.utils import get_strategy

    model = str(out.parent / "model")
    base = job_argv(model=model, estimator=None, engines=0, n_samples=G, kl=0)
    base += ["--train.batch_size", str(TRAIN_BATCH * world), "--train.micro_batch_size", str(MICRO)]
    base += ["--actor.adam.lr", "3e-3"]
    base += ["--actor.num_gpus_per_node", str(world), "--ds.attn_implementation", "sdpa"]
    base += ["--actor.eps_clip_low_high", str(CLIP), str(CLIP)]
    args = A.parse_args(base + ["--advantage_estimator", "psr"])
    args.ds.param_dtype = "fp32"  # DeepSpeed without bf16/fp16: exact float32 gradients
    strategy = get_strategy(args)
    strategy.setup_distributed()
    actor = Actor(model, attn_implementation="sdpa", param_dtype="bf16", ds_config=strategy.get_ds_train_config())
    actor.model.to(torch.float32)
    cfg = dict(
        optim=args.actor.optim,
        muon=vars(args.actor.muon),
        adam=vars(args.actor.adam),
        lr_scheduler="constant",
        lr_warmup_ratio=0.0,
        min_lr_ratio=args.actor.min_lr_ratio,
        max_norm=args.actor.max_norm,
        scheduler_steps=100,
    )
    actor, optim, scheduler = strategy.prepare((actor, cfg))
    engine = actor.model
    vocab = engine.module.config.vocab_size

    captured, records = [], []
    real_step = strategy.optimizer_step

    def optimizer_step(optimizer, model, sched, name="model", **kw):
        if engine.is_gradient_accumulation_boundary():  # the step's gradient and the weights it was taken at
            captured.append(
                {
                    "grad": {n: safe_get_full_grad(p).detach().clone() for n, p in engine.module.named_parameters()},
                    "weights": {n: p.detach().clone() for n, p in engine.module.named_parameters()},
                }
            )
        return real_step(optimizer, model, sched, name=name, **kw)

    strategy.optimizer_step = optimizer_step
    real_training_step = ActorPPOTrainer.training_step

    def training_step(self, experience, kl_ctl, step, loss_batch_info=None):
        rows = experience.action_mask.any(-1)
        records.append(
            {
                "step": len(captured),
                "boundary": engine.is_gradient_accumulation_boundary(),
                "sequences": [
                    s[a.bool()].tolist() for s, a in zip(experience.sequences[rows], experience.attention_mask[rows])
                ],
                "advantages": [
                    float(a[m][0]) for a, m in zip(experience.advantages[rows], experience.action_mask[rows])
                ],
            }
        )
        return real_training_step(self, experience, kl_ctl, step, loss_batch_info)

    ActorPPOTrainer.training_step = training_step
    results = []
    cases = [CONTROL] + [case + (PROMPTS * G,) for case in CASES] if world == 1 else DP_CASES
    for c, (name, mode, acc, n) in enumerate(cases):
        upstream = world == 1 and c == 0
        if upstream:  # OpenRLHF's own ppo_train (its windows are full here: nothing carries over)
            A.COUPLING.revert(only=["B1"])
        else:
            A.install_patches()
        args.algo.advantage.estimator = name
        args.actor.loss_agg_mode = mode
        args.rollout.n_samples_per_prompt = n // PROMPTS
        trainer = ActorPPOTrainer(strategy, actor, None, optim, scheduler, micro_train_batch_size=MICRO)
        rewards = toy_rewards(acc, seed=c, n=n)
        exps = _toy_experiences(actor, rewards, vocab, seed=100 + c)
        maker = RemoteExperienceMaker(None, None, None, None, SimpleNamespace(value=0.0), strategy, None)
        first, first_record = len(captured), len(records)
        seqs = [s[a.bool()].tolist() for e in exps for s, a in zip(e.sequences, e.attention_mask)]
        old = [lp[m].tolist() for e in exps for lp, m in zip(e.action_log_probs, e.action_mask)]
        rewards = [float(r) for e in exps for r in e.rewards]
        torch.manual_seed(c)  # A1's random choice of the K mod E left-over samples: the same on every rank
        mine = maker.compute_advantages_and_returns(exps)  # one experience per rank (the driver's list)
        for e in mine if world == 1 else [mine[rank]]:
            trainer.replay_buffer.append(e)
        status = trainer.ppo_train(0.0)
        trainer.replay_buffer.clear()
        results.append(
            {
                "name": name,
                "mode": mode,
                "acc": acc,
                "upstream": upstream,
                "rewards": rewards,
                "sequences": seqs,
                "old": old,
                "steps": list(range(first, len(captured))),
                "records": records[first_record:],
                "status": {k: v for k, v in status.items() if k.startswith("lens/")},
            }
        )
    torch.save({"results": results, "captured": captured}, out / f"run.rank{rank}.pt")


# ------------------------------------------------------------------------------------------------
# The test: an independent reference
# ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model_dir: Path, world: int) -> list:
    """Start ``world`` worker ranks (gloo) on ``model_dir``; returns (output folder, processes)."""
    out = model_dir.parent / f"world{world}"
    out.mkdir()
    repo = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, MASTER_PORT=str(_free_port()))
    helpers = str(Path(__file__).resolve().parents[1] / "helpers")  # cpu_jobs, imported by a rank
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, helpers, os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, str(out), str(world)]
    procs = []
    for r in range(world):  # output to files: a full pipe would block a rank that the other waits for
        with open(out / f"rank{r}.log", "w") as log:
            procs.append(subprocess.Popen(cmd, env=dict(env, RANK=str(r)), stdout=log, stderr=subprocess.STDOUT))
    return out, procs


def _finish(out: Path, procs: list) -> list:
    """Wait for the ranks; their recorded runs, by rank."""
    for r, p in enumerate(procs):
        p.wait(timeout=900)
        assert p.returncode == 0, (out / f"rank{r}.log").read_text()[-6000:]
    return [torch.load(out / f"run.rank{rank}.pt", weights_only=False) for rank in range(len(procs))]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from lens_openrlhf.localrun.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("one_class") / "model", seed=0)


@pytest.fixture(scope="module")
def runs(model_dir):
    """The one-rank and the two-rank runs, started together (three processes)."""
    started = [_start(model_dir, world) for world in (1, 2)]
    (one,), two = [_finish(out, procs) for out, procs in started]
    one["model"] = model_dir
    return one, two


@pytest.fixture(scope="module")
def run(runs):
    return runs[0]


@pytest.fixture(scope="module")
def run_dp2(runs):
    return runs[1]


def reference_gradient(model, weights, samples, mode, denominator=None):
    """The gradient of the PPO-clip loss over ``samples`` (sequence, old log-probs, advantage), aggregated as
    OpenRLHF's ``mode`` defines it (or divided by ``denominator``), at ``weights``: a plain forward, nothing of
    OpenRLHF."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"} and model.config.tie_word_embeddings
    model.zero_grad()
    terms, n_tokens = [], 0
    for seq, old, adv in samples:
        x = torch.tensor([seq])
        logp = torch.log_softmax(model(x).logits.float()[0, :-1], -1).gather(-1, x[0, 1:, None])[:, 0]
        logp = logp[-len(old) :]  # the response tokens
        ratio = torch.exp(logp - torch.tensor(old))
        per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - CLIP, 1 + CLIP) * adv)
        terms.append(per_token.sum() if mode == "token-mean" else per_token.mean())
        n_tokens += len(old)
    loss = sum(terms) / (denominator or (n_tokens if mode == "token-mean" else len(samples)))
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_each_step_trains_on_the_kept_class_only(run):
    for res in run["results"][1:]:
        kept_reward = 1.0 if res["name"] == "psr" else 0.0
        kept = sorted(tuple(s) for s, r in zip(res["sequences"], res["rewards"]) if r == kept_reward)
        trained = sorted(tuple(s) for rec in res["records"] for s in rec["sequences"])
        assert trained == kept, (res["name"], res["acc"])  # every kept sample once, no other sample
        assert all(a == (1.0 if res["name"] == "psr" else -1.0) for rec in res["records"] for a in rec["advantages"])
        K = len(kept)
        gas = TRAIN_BATCH // MICRO
        assert len(res["steps"]) == math.ceil(math.ceil(K / MICRO) / gas), (res["name"], res["acc"], K)
        assert res["status"]["lens/trained_samples"] == K
        assert res["status"]["lens/optimizer_steps"] == len(res["steps"])


def test_each_optimizer_step_equals_the_reference_gradient(run):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(run["model"]), dtype=torch.float32, attn_implementation="eager")
    worst = {}
    for res in run["results"][1:]:
        adv = 1.0 if res["name"] == "psr" else -1.0
        kept_reward = 1.0 if res["name"] == "psr" else 0.0
        old_of = {tuple(s): o for s, o in zip(res["sequences"], res["old"])}
        kept = {tuple(s) for s, r in zip(res["sequences"], res["rewards"]) if r == kept_reward}
        for step in res["steps"]:
            window = [tuple(s) for rec in res["records"] if rec["step"] == step for s in rec["sequences"]]
            assert window and set(window) <= kept
            cap = run["captured"][step]
            ref = reference_gradient(model, cap["weights"], [(list(s), old_of[s], adv) for s in window], res["mode"])
            scale = max(g.abs().max().item() for g in ref.values())
            err = max((cap["grad"][n] - ref[n]).abs().max().item() for n in ref) / scale
            key = (res["name"], res["mode"], res["acc"])
            worst[key] = max(worst.get(key, 0.0), err)
            assert scale > 1e-6 and err < 1e-5, (key, step, err)
    for key, err in sorted(worst.items()):
        print(f"{key}: max |grad - reference| / max |reference| = {err:.2e}")


def test_two_data_parallel_ranks_train_equal_shares_to_the_reference_gradient(run_dp2, model_dir):
    """Two gloo ranks (ZeRO-2), each fed the experience A1 gives it: equal kept shares, disjoint, together the
    kept class less K mod 2; the same optimizer steps on both ranks (a short window included), each equal to the
    reference over both ranks' samples of that window (OpenRLHF normalises over the data-parallel group)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    r0, r1 = run_dp2
    gas = TRAIN_BATCH // MICRO
    for res0, res1 in zip(r0["results"], r1["results"]):
        assert res0["sequences"] == res1["sequences"]  # one rollout, built alike on both ranks
        name, mode = res0["name"], res0["mode"]
        adv, kept_reward = (1.0, 1.0) if name == "psr" else (-1.0, 0.0)
        kept = {tuple(s) for s, r in zip(res0["sequences"], res0["rewards"]) if r == kept_reward}
        mine = [[tuple(s) for rec in res["records"] for s in rec["sequences"]] for res in (res0, res1)]
        assert len(mine[0]) == len(mine[1]) == len(kept) // 2 and not set(mine[0]) & set(mine[1])
        assert set(mine[0]) | set(mine[1]) <= kept
        assert len(res0["steps"]) == len(res1["steps"]) == math.ceil(math.ceil(len(kept) // 2 / MICRO) / gas)
        assert res0["status"]["lens/trained_samples"] == len(kept) - len(kept) % 2
        old_of = {tuple(s): o for s, o in zip(res0["sequences"], res0["old"])}
        for s0, s1 in zip(res0["steps"], res1["steps"]):
            c0, c1 = r0["captured"][s0], r1["captured"][s1]
            for n in c0["grad"]:
                torch.testing.assert_close(c0["grad"][n], c1["grad"][n], rtol=1e-6, atol=1e-7)  # all-reduced
            window = [
                tuple(s)
                for res, step in ((res0, s0), (res1, s1))
                for rec in res["records"]
                if rec["step"] == step
                for s in rec["sequences"]
            ]
            ref = reference_gradient(model, c0["weights"], [(list(s), old_of[s], adv) for s in window], mode)
            scale = max(g.abs().max().item() for g in ref.values())
            err = max((c0["grad"][n] - ref[n]).abs().max().item() for n in ref) / scale
            print(f"dp 2 {name} {mode} {res0['acc']}: window of {len(window)}, error {err:.2e}")
            assert scale > 1e-6 and err < 1e-5, (name, mode, err)


def test_data_parallel_groups_get_equal_kept_shares(make_experiences):
    """With E data-parallel actor groups, A1 re-packs the rollout into E experiences (the i-th goes to the i-th
    group) with K // E kept samples each, as seed 003's drop_extra_rows; every sample stays in the list (OpenRLHF's
    rollout statistics), with its advantage; the K mod E left over are not trained on."""
    from types import SimpleNamespace

    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    from lens_openrlhf import coupling as A
    from lens_openrlhf.estimators import group_advantages

    A.install_patches()
    args = A.parse_args(job_argv("--actor.num_gpus_per_node", 4, estimator="nsr"))
    rewards = torch.tensor([[0.0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 0]])  # K = 7 incorrect, E = 4: 1 each, 3 left
    maker = RemoteExperienceMaker(None, None, None, None, SimpleNamespace(value=0.0), SimpleNamespace(args=args), None)
    out = maker.compute_advantages_and_returns(make_experiences(rewards, micro=5))
    assert len(out) == 4
    want = group_advantages("nsr", rewards).flatten()
    seen = []
    for e in out:
        trained = e.info["lens/trained"]
        assert trained.sum() == 1 and torch.all(e.rewards[trained > 0] == 0)
        assert torch.all(e.info["lens/trained_frac"] == 4 / 12)
        for row, i in enumerate(e.index):
            m = e.action_mask[row]
            assert torch.all(e.advantages[row][m] == want[i]) and torch.all(e.advantages[row][~m] == 0)
            assert e.rewards[row] == rewards.flatten()[i]
        seen += e.index
    assert sorted(seen) == list(range(12))  # every sample, once
    # one group: nothing re-packed, every incorrect sample marked
    args = A.parse_args(job_argv("--actor.num_gpus_per_node", 1, estimator="nsr"))
    maker = RemoteExperienceMaker(None, None, None, None, SimpleNamespace(value=0.0), SimpleNamespace(args=args), None)
    exps = make_experiences(rewards, micro=5)
    out = maker.compute_advantages_and_returns(exps)
    assert [id(e) for e in out] == [id(e) for e in exps]
    assert sum(int(e.info["lens/trained"].sum()) for e in out) == 7


def test_control_openrlhfs_own_loop_scales_the_kept_class_by_its_token_share(run):
    """Without B1 (what psr/nsr did before): the dropped class stays in the batch with A = 0, so each window's
    gradient is the kept class's gradient times (kept tokens / all tokens of the window), here for NSR at
    accuracy 0.75: the update shrinks with the batch's accuracy, which B1 removes."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(run["model"]), dtype=torch.float32, attn_implementation="eager")
    res = run["results"][0]
    assert res["upstream"] and len(res["steps"]) == 2  # 8 samples, 4 micro-batches of 2, windows of 2
    old_of = {tuple(s): o for s, o in zip(res["sequences"], res["old"])}
    incorrect = {tuple(s) for s, r in zip(res["sequences"], res["rewards"]) if r == 0.0}
    shares = []
    for step in res["steps"]:
        window = [tuple(s) for rec in res["records"] if rec["step"] == step for s in rec["sequences"]]
        assert len(window) == 4 and not set(window) <= incorrect  # the correct samples were trained on too
        kept = [s for s in window if s in incorrect]
        if not kept:
            assert all(g.abs().max() == 0 for g in run["captured"][step]["grad"].values())
            continue
        all_tokens = sum(len(old_of[s]) for s in window)
        samples = [(list(s), old_of[s], -1.0) for s in kept]
        cap = run["captured"][step]
        diluted = reference_gradient(model, cap["weights"], samples, "token-mean", denominator=all_tokens)
        scale = max(g.abs().max().item() for g in diluted.values())
        assert max((cap["grad"][n] - diluted[n]).abs().max().item() for n in diluted) / scale < 1e-5
        share = sum(len(old_of[s]) for s in kept) / all_tokens
        assert share < 1
        shares.append(share)
    assert shares
    print(f"OpenRLHF's own loop, NSR at accuracy 0.75: gradient = kept-class gradient x token share {shares}")


if __name__ == "__main__":
    worker(sys.argv[1], int(sys.argv[2]))
