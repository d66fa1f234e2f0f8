"""The dataset builder on small files written here in the real public schemas (jsonl and parquet).

Schemas: Hendrycks MATH (problem, solution, level "Level N", type), MATH-500 style (answer, subject,
integer level, unique_id), DAPO-Math-17k (prompt = chat messages wrapping the problem, reward_model
{ground_truth}, extra_info {index}), NuminaMath-1.5 (problem, solution, answer, problem_type,
question_type, source, problem_is_valid, solution_is_valid, synthetic).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lens_openrlhf.data import cli as D
from lens_openrlhf.data import schemas, sources
from lens_openrlhf.data import select as data_select

REPO = Path(__file__).resolve().parents[2]

DAPO_WRAP = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{p}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)

TEST_ROWS = [
    {"problem": "What is $3 \\cdot 4$?", "solution": "It is $\\boxed{12}$.", "level": "Level 1", "type": "Prealgebra"},
    {
        "problem": "Solve $x^2 = 9$ for $x>0$.",
        "solution": "So $x = \\boxed{3}$.",
        "level": "Level 2",
        "type": "Algebra",
    },
    {
        "problem": "Find $\\dfrac{1}{3}+\\dfrac{1}{6}$.",
        "solution": "$\\boxed{\\frac{1}{2}}$",
        "level": "Level 3",
        "type": "Prealgebra",
    },
    {
        "problem": "How many primes are below 20?",
        "solution": "There are $\\boxed{8}$.",
        "level": "Level 4",
        "type": "Number Theory",
    },
    {
        "problem": "Compute $\\binom{6}{2}$.",
        "solution": "$\\boxed{15}$",
        "level": "Level 5",
        "type": "Counting & Probability",
    },
    {
        "problem": "An unlabelled-level problem: $2^5$?",
        "solution": "$\\boxed{32}$",
        "level": "Level ?",
        "type": "Algebra",
    },
    {
        "problem": "A test problem whose solution lost its box.",
        "solution": "The answer is 4.",
        "level": "Level 5",
        "type": "Geometry",
    },
]

TRAIN_ROWS = [
    {"problem": "What is $1+1$?", "solution": "Clearly $\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
    {
        "problem": "Compute $\\frac{1}{2}+\\frac{1}{4}$.",
        "solution": "$\\boxed{\\frac{3}{4}}$",
        "level": "Level 2",
        "type": "Prealgebra",
    },
    {"problem": "No box in this solution.", "solution": "The answer is 5.", "level": "Level 3", "type": "Algebra"},
    {"problem": "Garbled answer.", "solution": "$\\boxed{)(}$", "level": "Level 3", "type": "Algebra"},
    {"problem": "Level unknown: $7 \\times 6$?", "solution": "$\\boxed{42}$", "level": "Level ?", "type": "Prealgebra"},
    # a test problem with different spacing, case and \left/\right-free fraction macros: decontaminated
    {
        "problem": "find  $\\frac{1}{3} + \\tfrac{1}{6}$.",
        "solution": "$\\boxed{\\frac12}$",
        "level": "Level 3",
        "type": "Prealgebra",
    },
    {
        "problem": "What is  $1 + 1$ ?",
        "solution": "$\\boxed{2}$",
        "level": "Level 1",
        "type": "Algebra",
    },  # duplicate of row 0
    {"problem": "", "solution": "$\\boxed{1}$", "level": "Level 1", "type": "Algebra"},  # missing problem
]


def dapo_rows():
    rows = []
    for k in range(30):
        p = f"What is {k} + 7?"
        for copy in range(2):  # the hub file repeats problems
            rows.append((p, str(k + 7), f"uuid-{k}-{copy}"))
    rows.append(("How many primes are below 20?", "8", "uuid-test"))  # a MATH test problem
    rows.append(("What is $1+1$?", "2", "uuid-math-train"))  # a MATH train problem
    rows.append(("A DAPO problem with no ground truth.", "", "uuid-empty"))
    return [
        {
            "data_source": "math_dapo",
            "prompt": [{"content": DAPO_WRAP.format(p=p), "role": "user"}],
            "ability": "MATH",
            "reward_model": {"ground_truth": gt, "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": idx},
        }
        for p, gt, idx in rows
    ]


NUMINA_ROWS = [
    {
        "problem": "Numina: what is 2+2?",
        "solution": "... \\boxed{4}",
        "answer": "4",
        "problem_type": "Algebra",
        "question_type": "math-word-problem",
        "source": "cn_k12",
        "problem_is_valid": "Yes",
        "solution_is_valid": "Yes",
        "synthetic": False,
    },
    {
        "problem": "Numina: prove that 1 < 2.",
        "solution": "...",
        "answer": "proof",
        "problem_type": "Inequalities",
        "question_type": "proof",
        "source": "olympiads",
        "problem_is_valid": "Yes",
        "solution_is_valid": "Yes",
        "synthetic": False,
    },
    {
        "problem": "Numina: lost answer.",
        "solution": "...",
        "answer": "notfound",
        "problem_type": "Algebra",
        "question_type": "math-word-problem",
        "source": "olympiads",
        "problem_is_valid": "Yes",
        "solution_is_valid": "Yes",
        "synthetic": False,
    },
    {
        "problem": "Numina: invalid problem.",
        "solution": "...",
        "answer": "3",
        "problem_type": "Algebra",
        "question_type": "math-word-problem",
        "source": "olympiads",
        "problem_is_valid": "No",
        "solution_is_valid": "Yes",
        "synthetic": False,
    },
    {
        "problem": "Numina: x such that 2x = 10.",
        "solution": "...",
        "answer": "x=5",
        "problem_type": "Algebra",
        "question_type": "math-word-problem",
        "source": "amc_aime",
        "problem_is_valid": "Yes",
        "solution_is_valid": "Yes",
        "synthetic": True,
    },
    {
        "problem": "Compute $\\binom{6}{2}$.",
        "solution": "...",
        "answer": "15",
        "problem_type": "Combinatorics",
        "question_type": "math-word-problem",
        "source": "math",
        "problem_is_valid": "Yes",
        "solution_is_valid": "Yes",
        "synthetic": False,
    },
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture()
def files(tmp_path):
    return {
        "math_train": write_jsonl(tmp_path / "math_train.jsonl", TRAIN_ROWS),
        "math_test": write_parquet(tmp_path / "math_test.parquet", TEST_ROWS),
        "dapo": write_parquet(tmp_path / "dapo-math-17k.parquet", dapo_rows()),
        "numina": write_jsonl(tmp_path / "numina.jsonl", NUMINA_ROWS),
        "dir": tmp_path,
    }


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def run_main(*argv):
    assert D.main([str(a) for a in argv]) == 0


def train_args(files, out, mix="math-dapo", fmt="qwen-base", *extra):
    return [
        "train",
        "--mix",
        mix,
        "--format",
        fmt,
        "--out",
        out,
        "--workers",
        "1",
        "--math-train",
        files["math_train"],
        "--math-test",
        files["math_test"],
        "--dapo",
        files["dapo"],
        "--numina",
        files["numina"],
        *extra,
    ]


# ------------------------------------------------------------------------------------------ units


def test_normalize_problem_and_level():
    assert schemas.normalize_problem("Find $\\dfrac{1}{3}+\\dfrac{1}{6}$.") == schemas.normalize_problem(
        "find  $\\frac{1}{3} + \\tfrac{1}{6}$ ."
    )
    assert schemas.normalize_problem("$\\left( x \\right)$") == schemas.normalize_problem("(x)")
    assert schemas.normalize_problem("What is 1+1?") != schemas.normalize_problem("What is 1+2?")
    assert [schemas.parse_level(v) for v in ("Level 4", "level 5", 3, "2", "Level ?", None, 7, True)] == [
        4,
        5,
        3,
        2,
        None,
        None,
        None,
        None,
    ]


def test_prompt_formats():
    plain = schemas.format_prompt("What is 1+1?", "qwen-base")
    assert isinstance(plain, str) and plain.startswith("Question: What is 1+1?") and "\\boxed{}" in plain
    chat = schemas.format_prompt("What is 1+1?", "llama-instruct")
    assert chat == [{"role": "user", "content": "What is 1+1?\n\n" + schemas.BOXED_INSTRUCTION}]
    with pytest.raises(ValueError, match="--format"):
        schemas.format_prompt("x", "chatml")


# ------------------------------------------------------------------------------------------ train mixes


def test_math_dapo_mix(files, tmp_path):
    out = tmp_path / "out" / "train.jsonl"
    run_main(*train_args(files, out, "math-dapo", "qwen-base", "--dapo-size", "10", "--seed", "3"))
    rows = read_jsonl(out)
    report = json.loads(Path(str(out) + ".report.json").read_text())

    by_source = {}
    for r in rows:
        assert set(r) == {"prompt", "label", "problem", "level", "subject", "source", "id", "datasource"}
        assert r["prompt"] == schemas.QWEN_BASE_TEMPLATE.replace("{problem}", r["problem"])
        by_source.setdefault(r["source"], []).append(r)
    # MATH train: rows 0, 1, 4 survive (2 no answer, 3 garbled gold, 5 in test, 6 duplicate, 7 no problem)
    assert sorted(r["problem"] for r in by_source["math_train"]) == sorted(TRAIN_ROWS[i]["problem"] for i in (0, 1, 4))
    math_labels = {r["problem"]: r["label"] for r in by_source["math_train"]}
    assert math_labels["Compute $\\frac{1}{2}+\\frac{1}{4}$."] == "\\frac{3}{4}"
    assert {r["problem"]: r["level"] for r in by_source["math_train"]}["Level unknown: $7 \\times 6$?"] is None
    # DAPO: exactly 10 sampled, unwrapped, labels right, none from the test set or MATH train
    dapo = by_source["dapo"]
    assert len(dapo) == 10 and len({r["problem"] for r in dapo}) == 10
    for r in dapo:
        assert not r["problem"].startswith("Solve the following") and "Remember to put" not in r["problem"]
        k = int(r["problem"].split()[2])
        assert r["label"] == str(k + 7)
    test_keys = {schemas.normalize_problem(t["problem"]) for t in TEST_ROWS}
    assert not any(schemas.normalize_problem(r["problem"]) in test_keys for r in rows)

    m = report["sources"]["math_train"]
    assert m["rows_read"] == len(TRAIN_ROWS) and m["kept"] == 3
    assert m["dropped"]["no_answer"]["ids"] == ["math_train/math_train.jsonl#2"]
    assert m["dropped"]["unparseable_gold"]["ids"] == ["math_train/math_train.jsonl#3"]
    assert m["dropped"]["in_test_set"]["ids"] == ["math_train/math_train.jsonl#5"]
    assert m["dropped"]["duplicate"]["ids"] == ["math_train/math_train.jsonl#6"]
    assert m["dropped"]["missing_problem"]["ids"] == ["math_train/math_train.jsonl#7"]
    assert m["flagged"]["unknown_level"]["ids"] == ["math_train/math_train.jsonl#4"]
    d = report["sources"]["dapo"]
    assert d["rows_read"] == 63
    assert d["dropped"]["duplicate"]["count"] == 31  # 30 hub repeats + the MATH train problem
    assert d["dropped"]["in_test_set"]["ids"] == ["dapo/uuid-test"]
    assert d["dropped"]["no_answer"]["count"] == 1 and d["dropped"]["no_answer"]["ids"] == ["dapo/uuid-empty"]
    assert d["dropped"]["not_sampled"]["count"] == 20 and d["kept"] == 10
    assert report["rows_written"] == len(rows) == 13
    assert report["by_source"] == {"math_train": 3, "dapo": 10}


def test_seeded_sampling_is_reproducible(files, tmp_path):
    def dapo_ids(seed, name):
        out = tmp_path / name
        run_main(*train_args(files, out, "math-dapo", "qwen-base", "--dapo-size", "10", "--seed", str(seed)))
        return [r["id"] for r in read_jsonl(out) if r["source"] == "dapo"]

    a, b, c = dapo_ids(1, "a.jsonl"), dapo_ids(1, "b.jsonl"), dapo_ids(2, "c.jsonl")
    assert a == b
    assert set(a) != set(c)


def test_dapo_size_larger_than_available_is_flagged(files, tmp_path):
    out = tmp_path / "t.jsonl"
    run_main(*train_args(files, out, "math-dapo", "qwen-base", "--dapo-size", "100"))
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["by_source"]["dapo"] == 30
    assert report["sources"]["dapo"]["flagged"]["short_of_size"]["count"] == 1


def test_math_numina_mix_in_chat_format_through_openrlhf(files, tmp_path):
    out = tmp_path / "numina.jsonl"
    run_main(*train_args(files, out, "math-numina", "llama-instruct"))
    rows = read_jsonl(out)
    numina = {r["problem"]: r for r in rows if r["source"] == "numina"}
    assert set(numina) == {"Numina: what is 2+2?", "Numina: x such that 2x = 10."}
    assert numina["Numina: x such that 2x = 10."]["label"] == "x=5"
    report = json.loads(Path(str(out) + ".report.json").read_text())["sources"]["numina"]
    assert report["dropped"]["proof"]["ids"] == ["numina/numina.jsonl#1"]
    assert report["dropped"]["no_answer"]["ids"] == ["numina/numina.jsonl#2"]
    assert report["dropped"]["invalid_flag"]["ids"] == ["numina/numina.jsonl#3"]
    assert report["dropped"]["in_test_set"]["ids"] == ["numina/numina.jsonl#5"]

    # OpenRLHF's own preprocessing (--data.apply_chat_template) accepts the message-list prompt
    spec = importlib.util.spec_from_file_location(
        "openrlhf_prompts_dataset",
        Path(importlib.util.find_spec("openrlhf").origin).parent / "datasets" / "prompts_dataset.py",
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seen = []

    def apply_chat_template(chat, tokenize, add_generation_prompt):
        seen.append(chat)
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in chat) + "<assistant>"

    row = rows[0]
    prompt, label = mod.preprocess_data(row, None, "prompt", "label", apply_chat_template)
    assert seen[0] == row["prompt"] and label == row["label"]
    assert prompt == f"<user>{row['problem']}\n\n{schemas.BOXED_INSTRUCTION}</user><assistant>"
    # and the qwen-base string passes through unchanged without a chat template
    plain = {"prompt": schemas.format_prompt(row["problem"], "qwen-base"), "label": row["label"]}
    assert mod.preprocess_data(plain, None, "prompt", "label", None) == (plain["prompt"], row["label"])


# ------------------------------------------------------------------------------------------ test set


def test_test_set_keeps_levels_and_subjects(files, tmp_path):
    out = tmp_path / "test.jsonl"
    run_main("test", "--format", "llama-instruct", "--math-test", files["math_test"], "--out", out, "--workers", "1")
    rows = read_jsonl(out)
    assert [r["level"] for r in rows] == [1, 2, 3, 4, 5, None]
    assert [r["subject"] for r in rows] == [t["type"] for t in TEST_ROWS[:6]]
    assert [r["label"] for r in rows] == ["12", "3", "\\frac{1}{2}", "8", "15", "32"]
    assert all(r["source"] == "math_test" and isinstance(r["prompt"], list) for r in rows)
    # the level travels in OpenRLHF's `datasource`, where the training-time eval reads it
    assert [r["datasource"] for r in rows] == [f"math_test_level{i}" for i in range(1, 6)] + ["math_test"]
    from lens_openrlhf.coupling.eval_metrics import LEVEL_RE as _LEVEL_RE

    assert [int(_LEVEL_RE.search(r["datasource"]).group(1)) for r in rows[:5]] == [1, 2, 3, 4, 5]
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["by_level"] == {"1": 1, "2": 1, "3": 1, "4": 1, "5": 1, "unknown": 1}
    assert report["sources"]["math_test"]["dropped"]["no_answer"]["ids"] == ["math_test/math_test.parquet#6"]
    assert report["sources"]["math_test"]["flagged"]["unknown_level"]["ids"] == ["math_test/math_test.parquet#5"]


def test_math500_style_file_with_answer_column(tmp_path):
    rows = [
        {
            "problem": "P1",
            "solution": "... \\boxed{wrong}",
            "answer": "\\frac{3}{5}",
            "subject": "Algebra",
            "level": 2,
            "unique_id": "test/algebra/1.json",
        },
        {
            "problem": "P2",
            "solution": "... \\boxed{7}",
            "answer": "",
            "subject": "Geometry",
            "level": 5,
            "unique_id": "test/geometry/2.json",
        },
    ]
    src = write_jsonl(tmp_path / "math500.jsonl", rows)
    out = tmp_path / "t.jsonl"
    run_main("test", "--format", "qwen-base", "--math-test", src, "--out", out, "--workers", "1")
    got = read_jsonl(out)
    assert [(r["id"], r["label"], r["level"], r["subject"]) for r in got] == [
        ("math_test/test/algebra/1.json", "\\frac{3}{5}", 2, "Algebra"),
        ("math_test/test/geometry/2.json", "7", 5, "Geometry"),  # empty answer: falls back to the solution's box
    ]


def test_hub_code_path_with_a_local_dataset_folder(tmp_path, monkeypatch):
    """hf:<repo> goes through datasets.load_dataset; a local folder exercises that call offline."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")  # keep ~/.cache clean
    folder = tmp_path / "hub_like"
    folder.mkdir()
    write_parquet(folder / "test.parquet", TEST_ROWS[:3])
    out = tmp_path / "t.jsonl"
    run_main("test", "--format", "qwen-base", "--math-test", f"hf:{folder}@test", "--out", out, "--workers", "1")
    assert [r["label"] for r in read_jsonl(out)] == ["12", "3", "\\frac{1}{2}"]


# ------------------------------------------------------------------------------------------ errors


def test_missing_column_names_file_and_column(files, tmp_path, capsys):
    bad = write_parquet(tmp_path / "bad_dapo.parquet", [{"prompt": "x", "other": 1}])
    out = tmp_path / "o.jsonl"
    args = train_args(files, out)
    args[args.index("--dapo") + 1] = bad
    assert D.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert "--dapo" in err and "bad_dapo.parquet" in err and "'reward_model'" in err and "DAPO-Math-17k" in err
    assert not out.exists()


def test_bad_source_specs(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    assert (
        D.main(["test", "--format", "qwen-base", "--math-test", str(tmp_path / "nope.jsonl"), "--out", str(out)]) == 2
    )
    assert "--math-test" in capsys.readouterr().err
    (tmp_path / "broken.jsonl").write_text('{"problem": "a"}\nnot json\n')
    assert (
        D.main(["test", "--format", "qwen-base", "--math-test", str(tmp_path / "broken.jsonl"), "--out", str(out)]) == 2
    )
    assert "broken.jsonl:2" in capsys.readouterr().err
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    assert (
        D.main(["test", "--format", "qwen-base", "--math-test", "hf:no-such-org/no-such-dataset", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "--math-test" in err and "local .jsonl/.parquet path" in err


def test_missing_verifier_is_an_error_not_bad_rows(files, tmp_path, capsys, monkeypatch):
    # without Math-Verify every gold answer would look "unparseable" and every row would be dropped
    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify now fails, as if not installed
    monkeypatch.setattr(data_select, "_GOLD_OK", {})  # the gold-check cache (lens_openrlhf.data.select)
    out = tmp_path / "o.jsonl"
    assert D.main(["test", "--format", "qwen-base", "--math-test", str(files["math_test"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs Math-Verify, which is not installed" in err and "--no-gold-check" in err
    assert not out.exists()
    assert (
        D.main(
            [
                "test",
                "--format",
                "qwen-base",
                "--math-test",
                str(files["math_test"]),
                "--out",
                str(out),
                "--no-gold-check",
            ]
        )
        == 0
    )


# ------------------------------------------------------------------------------------------ CLI


def test_cli_subprocess(files, tmp_path):
    out = tmp_path / "cli" / "train.jsonl"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lens_openrlhf.data",
            *map(str, train_args(files, out, "math-dapo", "llama-instruct", "--dapo-size", "5")),
            "--workers",
            "2",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 8 rows" in proc.stdout and "in_test_set" in proc.stdout and "report:" in proc.stdout
    rows = read_jsonl(out)
    assert len(rows) == 8 and all(isinstance(r["prompt"], list) for r in rows)
    assert Path(str(out) + ".report.json").exists()


# ------------------------------------------------------------------------------------------ malformed inputs


def _dapo_row(content, gt, idx):
    return {
        "prompt": [{"role": "user", "content": content}],
        "reward_model": {"ground_truth": gt},
        "extra_info": {"index": idx},
    }


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_dapo_rows_without_a_blank_line_after_the_instruction(files, tmp_path, capsys):
    """DAPO's instruction followed by a single line break (or a space): the problem is still found; a prompt
    that starts like DAPO's but cannot be split is dropped and counted as unparsed_prompt, never guessed."""
    instruction = DAPO_WRAP.split("\n\n")[0]
    reminder = DAPO_WRAP.split("\n\n")[2]
    rows = [
        _dapo_row(f"{instruction}\n{p}\n\n{reminder}", str(k + 7), f"nl-{k}")
        for k, p in enumerate(f"What is {k} + 7?" for k in range(20))
    ]
    rows.append(_dapo_row(f"{instruction} What is 100 + 1?\n{reminder}", "101", "space"))
    rows.append(_dapo_row("Solve the following math problem step by step. Think hard. What is 5 + 5?", "10", "unsplit"))
    rows.append(
        _dapo_row("Solve the following math problem step by step. Be brief.\nWhat is 6 + 6?", "12", "other-line")
    )
    dapo = write_jsonl(tmp_path / "dapo_nl.jsonl", rows)
    out = tmp_path / "o.jsonl"
    args = train_args(files, out)
    args[args.index("--dapo") + 1] = dapo
    run_main(*args)
    got = {r["id"]: r for r in read_jsonl(out) if r["source"] == "dapo"}
    assert len(got) == 22
    for k in range(20):
        assert (got[f"dapo/nl-{k}"]["problem"], got[f"dapo/nl-{k}"]["label"]) == (f"What is {k} + 7?", str(k + 7))
    assert got["dapo/space"]["problem"] == "What is 100 + 1?"
    assert got["dapo/other-line"]["problem"] == "What is 6 + 6?"
    d = json.loads(Path(str(out) + ".report.json").read_text())["sources"]["dapo"]
    assert d["dropped"]["unparsed_prompt"]["ids"] == ["dapo/unsplit"]
    assert "duplicate" not in d["dropped"]
    assert "unparsed_prompt: 1" in capsys.readouterr().out


def test_every_row_dropped_is_an_error_not_an_empty_file(files, tmp_path, capsys):
    bad_test = write_jsonl(tmp_path / "nothing.jsonl", [{"problem": "P", "solution": "no box", "level": 1}] * 3)
    out = tmp_path / "t.jsonl"
    assert (
        D.main(["test", "--format", "qwen-base", "--math-test", str(bad_test), "--out", str(out), "--workers", "1"])
        == 2
    )
    err = _one_line_error(capsys)
    assert "--math-test" in err and "nothing.jsonl" in err and "every one of its 3 rows was dropped" in err
    assert "no_answer 3" in err and not out.exists()
    assert Path(str(out) + ".report.json").exists()  # the report says which rows and why
    # a training mix whose DAPO part loses every row (here: all are test problems) is refused too
    dapo = write_jsonl(
        tmp_path / "dapo_all_test.jsonl",
        [_dapo_row(DAPO_WRAP.format(p=t["problem"]), "1", f"t{i}") for i, t in enumerate(TEST_ROWS[:3])],
    )
    args = train_args(files, tmp_path / "train.jsonl")
    args[args.index("--dapo") + 1] = dapo
    assert D.main([str(a) for a in args]) == 2
    err = _one_line_error(capsys)
    assert "--dapo" in err and "in_test_set 3" in err and not (tmp_path / "train.jsonl").exists()
    # asking for none is not an error
    run_main(*train_args(files, tmp_path / "none.jsonl", "math-dapo", "qwen-base", "--dapo-size", "0"))


def test_wrong_typed_fields_are_counted_drops_naming_the_field(tmp_path, capsys):
    rows = [
        {"problem": "Fine: $2+3$?", "solution": "$\\boxed{5}$", "level": "Level 1", "type": "Algebra"},
        # str() of this list holds a box: it must not become the label
        {"problem": "List solution", "solution": ["first \\boxed{7}", "second"], "level": "Level 2", "type": "Algebra"},
        {"problem": ["a", "list"], "solution": "$\\boxed{1}$", "level": "Level 2", "type": "Algebra"},
        {"problem": "Dict answer", "answer": {"value": 3}, "solution": "\\boxed{3}", "level": 3, "type": "Algebra"},
        {"problem": "Numeric answer is fine", "answer": 12, "solution": "", "level": 4, "type": "Algebra"},
    ]
    src = write_jsonl(tmp_path / "typed.jsonl", rows)
    out = tmp_path / "t.jsonl"
    run_main("test", "--format", "qwen-base", "--math-test", src, "--out", out, "--workers", "1")
    assert [(r["problem"], r["label"]) for r in read_jsonl(out)] == [
        ("Fine: $2+3$?", "5"),
        ("Numeric answer is fine", "12"),
    ]
    dropped = json.loads(Path(str(out) + ".report.json").read_text())["sources"]["math_test"]["dropped"]
    assert dropped["wrong_type_solution"]["ids"] == ["math_test/typed.jsonl#1"]
    assert dropped["wrong_type_problem"]["ids"] == ["math_test/typed.jsonl#2"]
    assert dropped["wrong_type_answer"]["ids"] == ["math_test/typed.jsonl#3"]
    assert "dropped wrong_type_solution: 1" in capsys.readouterr().out
    # DAPO: a list-valued ground truth and a non-text prompt
    dapo = [
        _dapo_row(DAPO_WRAP.format(p="What is 1 + 9?"), "10", "ok"),
        _dapo_row(DAPO_WRAP.format(p="Q2"), ["4"], "gt"),
        {"prompt": 42, "reward_model": {"ground_truth": "1"}, "extra_info": {"index": "p"}},
    ]
    rep = schemas.SourceReport("dapo", "x")
    ex = schemas.dapo_examples([sources.Row(f"r#{i}", r, "x") for i, r in enumerate(dapo)], "dapo", rep, "--dapo")
    assert [e.answer for e in ex] == ["10"]
    assert rep.dropped == {"wrong_type_ground_truth": ["dapo/gt"], "wrong_type_prompt": ["dapo/p"]}


def test_duplicate_test_problems_are_dropped_and_counted(tmp_path):
    rows = TEST_ROWS[:3] + [dict(TEST_ROWS[0], problem="what is $3\\cdot 4$ ?")]  # row 0 again, respaced
    src = write_jsonl(tmp_path / "dups.jsonl", rows)
    out = tmp_path / "t.jsonl"
    run_main("test", "--format", "qwen-base", "--math-test", src, "--out", out, "--workers", "1")
    assert [r["label"] for r in read_jsonl(out)] == ["12", "3", "\\frac{1}{2}"]
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["sources"]["math_test"]["dropped"]["duplicate"]["ids"] == ["math_test/dups.jsonl#3"]
    assert report["rows_written"] == 3


def test_unwritable_out_is_one_line(files, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for argv in (
        ["test", "--format", "qwen-base", "--math-test", str(files["math_test"]), "--out", str(blocker / "t.jsonl")],
        ["test", "--format", "qwen-base", "--math-test", str(files["math_test"]), "--out", str(tmp_path)],
        ["all", "--out-dir", str(blocker / "d"), "--math-test", str(files["math_test"])],
    ):
        assert D.main(argv) == 2
        err = _one_line_error(capsys)
        assert ("--out " in err or "--out-dir " in err) and str(tmp_path) in err
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lens_openrlhf.data",
            "test",
            "--format",
            "qwen-base",
            "--math-test",
            str(files["math_test"]),
            "--out",
            str(blocker / "t.jsonl"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_verifier_that_cannot_import_is_an_error_not_bad_rows(monkeypatch):
    """Math-Verify present but failing to import where the check runs: an error, not every row unparseable."""
    from lens_openrlhf.rewards import verify_worker

    def broken(gold, inner_timeout_s=5):
        raise ImportError("math_verify is broken here")

    monkeypatch.setattr(verify_worker, "gold_is_parseable", broken)
    monkeypatch.setattr(data_select, "_GOLD_OK", {})  # the gold-check cache (lens_openrlhf.data.select)
    with pytest.raises(sources.DataError, match="needs Math-Verify.*math_verify is broken here.*--no-gold-check"):
        data_select.check_golds(["1", "2"], workers=1)


def test_offline_sample_builds_every_file_through_the_real_loaders(tmp_path, capsys):
    """`all --offline-sample N`: no network; the sources are written in their own schemas (MATH, DAPO's wrapped chat
    prompt, Numina) and go through the same loading, cleaning and formats as the real ones."""
    assert D.main(["all", "--out-dir", str(tmp_path), "--offline-sample", "6", "--workers", "1"]) == 0
    for mix in ("math_dapo", "math_numina"):
        for tag in ("qwen", "llama"):
            rows = read_jsonl(tmp_path / f"train_{mix}.{tag}.jsonl")
            assert len(rows) == 12 and {r["source"] for r in rows} == {"math_train", mix.split("_")[1]}
            assert all(r["label"].lstrip("-").isdigit() for r in rows)
    test = read_jsonl(tmp_path / "math_test.qwen.jsonl")
    assert len(test) == 6 and all(1 <= r["level"] <= 5 for r in test)
    dapo = [r for r in read_jsonl(tmp_path / "train_math_dapo.qwen.jsonl") if r["source"] == "dapo"]
    assert all(r["problem"].startswith("What is $") for r in dapo)  # unwrapped from DAPO's instruction
    assert "offline sample: 6 generated problems per source" in capsys.readouterr().out
    assert D.main(["test", "--format", "qwen-base", "--out", str(tmp_path / "t.jsonl"), "--offline-sample", "0"]) == 2
