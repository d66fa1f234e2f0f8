"""The Math-Verify reward: answer extraction, scoring, the hard time limit, and the way OpenRLHF calls it.

Worker pools are started per test module (a few seconds); the pathological-answer tests start their own.
"""

import asyncio
import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from lens_openrlhf.rewards import math_reward as mr
from lens_openrlhf.rewards import verifier
from lens_openrlhf.rewards.answers import extract_last_boxed, normalize_label, split_response
from lens_openrlhf.rewards.math_reward import REASONS, reward_func, score_responses
from lens_openrlhf.rewards.verifier import RewardConfig, VerifierPool

REWARD_FILE = Path(mr.__file__).resolve()
PATHOLOGICAL = "\\boxed{9^{9^{9^{9^9}}}}"


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=2, timeout_s=5) as p:
        yield p


def reasons(out):
    """The one reason per sample, read back from extra_logs."""
    keys = [f"reward/{r}" for r in REASONS]
    per_sample = torch.stack([out["extra_logs"][k] for k in keys], dim=1)
    assert torch.all(per_sample.sum(dim=1) == 1), "each sample must have exactly one reason"
    return [REASONS[i] for i in per_sample.argmax(dim=1).tolist()]


# --------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("a \\boxed{1} then \\boxed{2}", "2"),  # last wins
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are text
        ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
        ("\\fbox{7}", "7"),
        ("\\boxed {x+1}", "x+1"),
        ("$\\boxed 5$", "5"),
        ("\\boxed{}", ""),
        ("no box here", None),
        ("\\boxed{3} and a truncated \\boxed{12", None),  # last box unclosed: no answer
        ("\\boxedfoo{3}", None),  # another macro
        ("", None),
    ],
)
def test_extract_last_boxed(text, expected):
    assert extract_last_boxed(text) == expected


def test_split_response_and_labels():
    assert split_response("PROMPT answer", "PROMPT") == (" answer", True)
    assert split_response("<bos>PROMPT answer", "PROMPT") == (" answer", True)
    assert split_response("something else", "PROMPT") == ("something else", False)
    assert normalize_label("  \\boxed{3} ") == "3"
    assert normalize_label("$\\frac{1}{2}$") == "\\frac{1}{2}"
    assert normalize_label(7) == "7"
    assert normalize_label("") is None and normalize_label(None) is None


def test_config_from_env_and_errors():
    cfg = RewardConfig.from_env({"LENS_MATH_TIMEOUT_S": "3", "LENS_MATH_WORKERS": "3"})
    assert (cfg.timeout_s, cfg.workers, cfg.inner_timeout_s, cfg.mp_context) == (3.0, 3, 2, "forkserver")
    assert RewardConfig.from_env({}).resolved().inner_timeout_s == 4  # default deadline 5 s
    assert RewardConfig.from_env({"LENS_MATH_INNER_TIMEOUT_S": "1"}).inner_timeout_s == 1
    with pytest.raises(ValueError, match="LENS_MATH_TIMEOUT_S"):
        RewardConfig.from_env({"LENS_MATH_TIMEOUT_S": "soon"})
    with pytest.raises(ValueError, match="LENS_MATH_WORKERS"):
        RewardConfig.from_env({"LENS_MATH_WORKERS": "0"})
    with pytest.raises(ValueError, match="LENS_MATH_MP_CONTEXT"):
        RewardConfig.from_env({"LENS_MATH_MP_CONTEXT": "fork"})
    for bad in ("nan", "inf", "-1"):  # inf used to raise an OverflowError from math.ceil
        with pytest.raises(ValueError, match="LENS_MATH_TIMEOUT_S.*finite number > 0"):
            RewardConfig.from_env({"LENS_MATH_TIMEOUT_S": bad})


@pytest.mark.parametrize(
    "env, cause",
    [
        ({"LENS_MATH_WORKERS": "0"}, "LENS_MATH_WORKERS"),
        ({"LENS_MATH_WORKERS": "-1"}, "LENS_MATH_WORKERS"),
        ({"LENS_MATH_WORKERS": "abc"}, "LENS_MATH_WORKERS"),
        ({"LENS_MATH_WORKERS": "1.5"}, "LENS_MATH_WORKERS"),
        ({"LENS_MATH_MP_CONTEXT": "fork"}, "LENS_MATH_MP_CONTEXT"),
        ({"LENS_MATH_TIMEOUT_S": "nan"}, "LENS_MATH_TIMEOUT_S"),
        ({"LENS_MATH_TIMEOUT_S": "inf"}, "LENS_MATH_TIMEOUT_S"),
    ],
)
def test_verifier_that_cannot_run_raises_instead_of_scoring_zero(monkeypatch, env, cause):
    # every answer below is correct: scoring 0 would be a silent lie that LENS trains on
    verifier.shutdown_pool()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(verifier.VerifierUnavailable, match=f"cannot run.*{cause}"):
        reward_func(["Q \\boxed{2}", "Q \\boxed{3}"], ["Q", "Q"], ["2", "3"])
    verifier.shutdown_pool()


def test_verifier_without_math_verify_raises(tmp_path, monkeypatch):
    # a worker that cannot import Math-Verify: spawned workers take the parent's sys.path, where a broken
    # math_verify now comes first (the parent has imported the real one already, or never needs it)
    (tmp_path / "math_verify.py").write_text("raise ImportError('math_verify is not installed here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with VerifierPool(workers=1, mp_context="spawn", startup_timeout_s=60) as broken:
        with pytest.raises(verifier.VerifierUnavailable, match="math_verify is not installed here"):
            reward_func(["Q \\boxed{2}"], ["Q"], ["2"], pool=broken)


# --------------------------------------------------------------------------------------- scoring


def test_reward_func_scores_and_reasons(pool):
    cases = [
        # (response, label, score, reason)
        ("The answer is \\boxed{2}.", "2", 1.0, "correct"),
        ("\\boxed{0.5}", "\\frac{1}{2}", 1.0, "correct"),  # equivalent forms
        ("\\boxed{\\dfrac{1}{2}}", "0.5", 1.0, "correct"),
        ("\\boxed{\\sqrt{18}}", "3\\sqrt{2}", 1.0, "correct"),
        ("\\boxed{[1,2)}", "[1, 2)", 1.0, "correct"),
        ("\\boxed{x^2 + 2x}", "2x+x^2", 1.0, "correct"),
        ("\\boxed{3}", "2", 0.0, "wrong"),
        ("\\boxed{(1,2]}", "[1, 2)", 0.0, "wrong"),
        ("first \\boxed{2}, then I changed my mind: \\boxed{5}", "2", 0.0, "wrong"),  # last box wins
        ("first \\boxed{5}, then I changed my mind: \\boxed{2}", "2", 1.0, "correct"),
        ("I think it is 2.", "2", 0.0, "no_boxed"),
        ("\\boxed{ }", "2", 0.0, "empty_boxed"),
        ("\\boxed{)(}", "2", 0.0, "parse_error"),
        ("\\boxed{\\frac{}", "2", 0.0, "no_boxed"),  # unbalanced: the box never closes
        ("\\boxed{2}", "", 0.0, "gold_error"),
        ("\\boxed{2}", None, 0.0, "gold_error"),
        ("\\boxed{2}", "\\boxed{2}", 1.0, "correct"),  # a boxed label is reduced to its box
    ]
    prompts = [f"Q{i}: solve.\n" for i in range(len(cases))]
    queries = [p + c[0] for p, c in zip(prompts, cases)]
    out = reward_func(queries, prompts, [c[1] for c in cases], pool=pool)
    assert out["rewards"].dtype == torch.float32 and out["rewards"].shape == (len(cases),)
    assert out["rewards"].tolist() == [c[2] for c in cases]
    assert torch.equal(out["scores"], out["rewards"])
    assert reasons(out) == [c[3] for c in cases]
    assert out["extra_logs"]["reward/prompt_not_prefix"].sum().item() == 0
    assert out["extra_logs"]["reward/verify_seconds"].shape == (len(cases),)


def test_prompt_with_box_is_not_taken_as_the_answer(pool):
    prompt = "Put your final answer within \\boxed{}. What is 1+1?\n"
    out = reward_func([prompt + "It is two."], [prompt], ["2"], pool=pool)
    assert out["rewards"].tolist() == [0.0] and reasons(out) == ["no_boxed"]
    # the query does not start with the prompt (e.g. decoded differently): counted, whole query used
    out = reward_func(["x \\boxed{2}"], ["a prompt that is not in the query"], ["2"], pool=pool)
    assert out["rewards"].tolist() == [1.0]
    assert out["extra_logs"]["reward/prompt_not_prefix"].tolist() == [1.0]


def test_empty_batch(pool):
    out = reward_func([], [], [], pool=pool)
    assert out["rewards"].shape == (0,)


def test_mismatched_lengths_raise(pool):
    with pytest.raises(ValueError, match="2 queries, 1 prompts"):
        reward_func(["a", "b"], ["a"], ["1", "2"], pool=pool)


# --------------------------------------------------------------------------------------- time limit


def test_pathological_answer_is_killed_at_the_deadline():
    """Math-Verify's own timeout is set far beyond the deadline, so only the outer kill can stop it."""
    deadline = 2.0
    with VerifierPool(workers=2, timeout_s=deadline, inner_timeout_s=60) as p:
        score_responses(["\\boxed{1}", "\\boxed{1}"], ["1", "1"], pool=p)  # both workers started
        before = set(p.worker_pids)
        n_ok = 12
        responses = [PATHOLOGICAL] + [f"\\boxed{{{i}}}" for i in range(n_ok)]
        labels = ["2"] + [str(i) for i in range(n_ok)]
        t0 = time.perf_counter()
        verdicts = score_responses(responses, labels, pool=p)
        wall = time.perf_counter() - t0
        assert verdicts[0].score == 0.0 and verdicts[0].reason == "timeout"
        assert [v.reason for v in verdicts[1:]] == ["correct"] * n_ok
        # the stuck answer was cut at its deadline (poll timeout): without the kill it would run >= 60 s
        assert deadline <= verdicts[0].seconds < deadline + 1.0
        assert wall < deadline + 8.0, f"batch took {wall:.1f} s with a {deadline} s deadline"  # margin: shared CPUs
        assert p.stats["killed"] == 1
        killed = before - set(p.worker_pids)
        assert len(killed) == 1
        (pid,) = killed
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the stuck process is gone (killed and reaped)
        # the replacement worker serves the next batch
        again = score_responses([f"\\boxed{{{i}}}" for i in range(4)], [str(i) for i in range(4)], pool=p)
        assert [v.score for v in again] == [1.0] * 4


def test_pathological_answer_stopped_by_math_verify_timeout():
    """When Math-Verify's own (signal) timeout fires before the deadline: no kill, reason timeout."""
    with VerifierPool(workers=2, timeout_s=4, inner_timeout_s=1) as p:
        t0 = time.perf_counter()
        out = reward_func(["q" + PATHOLOGICAL, "q\\boxed{7}"], ["q", "q"], ["2", "7"], pool=p)
        wall = time.perf_counter() - t0
        assert out["rewards"].tolist() == [0.0, 1.0]
        assert reasons(out) == ["timeout", "correct"]
        assert wall < p.config.timeout_s + 8.0
        assert 1.0 <= out["extra_logs"]["reward/verify_seconds"][0].item() < p.config.timeout_s
        assert p.stats["killed"] == 0 and p.stats["died"] == 0


# --------------------------------------------------------------------------------------- OpenRLHF's way


def test_math_verify_itself_fails_off_the_main_thread():
    """The premise: calling Math-Verify with timeouts in a thread raises (why the pool exists)."""
    from math_verify import parse

    errors = []

    def run():
        try:
            parse("$1$", parsing_timeout=1)
        except ValueError as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors and "thread" in str(errors[0])


def test_reward_func_from_asyncio_to_thread(pool):
    async def main():
        calls = [
            asyncio.to_thread(reward_func, [f"P{i} \\boxed{{{i}}}"], [f"P{i}"], [str(i % 3)], pool=pool)
            for i in range(6)
        ]
        return await asyncio.gather(*calls)

    outs = asyncio.run(main())
    assert [o["rewards"].item() for o in outs] == [1.0 if i % 3 == i else 0.0 for i in range(6)]


def test_loaded_by_path_like_openrlhf(monkeypatch):
    """OpenRLHF execs the file as a module named "reward_func"; it must use the package's pool."""
    monkeypatch.setenv("LENS_MATH_WORKERS", "1")
    spec = importlib.util.spec_from_file_location("reward_func", str(REWARD_FILE))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.reward_func is mr.reward_func
    try:
        out = asyncio.run(asyncio.to_thread(module.reward_func, ["Q \\boxed{\\frac{2}{4}}"], ["Q"], ["0.5"]))
        assert out["rewards"].tolist() == [1.0]
        assert verifier.get_pool().config.workers == 1
    finally:
        verifier.shutdown_pool()


RAY_ACTOR_SRC = '''
import asyncio, os
import ray

@ray.remote(num_cpus=0)
class RewardActor:
    """Like OpenRLHF's vLLM rollout actor: async, and rewards go through SingleTurnAgentExecutor."""

    def __init__(self, reward_file):
        os.environ["LENS_MATH_WORKERS"] = "2"
        os.environ["LENS_MATH_TIMEOUT_S"] = "3"
        from openrlhf.utils.agent import SingleTurnAgentExecutor
        self.executor = SingleTurnAgentExecutor(remote_rm_url=reward_file)

    async def score(self, queries, prompts, labels):
        # OpenRLHF's own code path: one asyncio.to_thread(reward_func, ...) per query
        outs = await asyncio.gather(*[
            self.executor._fetch_rewards_via_func([q], [p], [l]) for q, p, l in zip(queries, prompts, labels)
        ])
        return [o[0]["rewards"].tolist() + o[0]["extra_logs"]["reward/timeout"].tolist() for o in outs]
'''


@pytest.mark.heavy
def test_inside_a_real_ray_async_actor(tmp_path):
    ray = pytest.importorskip("ray")
    actor_file = tmp_path / "ray_reward_actor.py"
    actor_file.write_text(RAY_ACTOR_SRC)
    spec = importlib.util.spec_from_file_location("ray_reward_actor", actor_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        actor = mod.RewardActor.remote(str(REWARD_FILE))
        queries = ["P:\\boxed{4}", "P:\\boxed{\\frac{1}{2}}", "P:no box", "P:" + PATHOLOGICAL]
        t0 = time.perf_counter()
        result = ray.get(actor.score.remote(queries, ["P:"] * 4, ["4", "0.5", "1", "2"]), timeout=120)
        wall = time.perf_counter() - t0
        assert result == [[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
        assert wall < 60
    finally:
        ray.shutdown()


def test_reward_modules_are_light():
    """answers / outcome / verify_worker / verifier / math_reward import neither torch nor Math-Verify (worker
    processes import them)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import lens_openrlhf.rewards.answers, lens_openrlhf.rewards.outcome\n"
        "import lens_openrlhf.rewards.verify_worker, lens_openrlhf.rewards.verifier\n"
        "import lens_openrlhf.rewards.math_reward\n"
        "print([m for m in ('torch', 'math_verify', 'vllm', 'openrlhf') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
