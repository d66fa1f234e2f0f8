"""What the driver checks of the files and paths a job names, before Ray, vLLM or a GPU starts.

- :func:`check_inputs`: the model folder (or hub id), the reward file, and the prompt and eval datasets: a local
  file is read in full (every JSONL line parses and holds ``--data.input_key`` and ``--data.label_key``; not
  empty); with ``--data.apply_chat_template`` a local model's tokenizer must have a chat template. Without this, a
  dataset that cannot train fails only inside a Ray actor, after the models are placed on the GPUs.
- :func:`check_paths`: where each path resolves in the process that uses it. Inside ``ray job submit`` the driver
  and every worker run in Ray's temporary copy of the job's ``working_dir``: a relative input must lie inside it
  (the copy is all a worker node receives), and a relative output would be written into the copy and deleted when
  the job ends, so it is refused. Outside a Ray job, relative paths are made absolute against the driver's
  working directory, so that Ray's workers (started elsewhere) read and write where the user meant.

Hub datasets (``org/name``) are read by OpenRLHF inside the job and not checked here. Every error is one line
naming the flag, the file and what to do.
"""

from __future__ import annotations

import ast
import json
import os
from typing import Dict, List, Optional
from ..dotted import get_flag as _get
from ..dotted import set_flag as _set

#: path flags the job reads (hierarchized names); a value that is neither an existing path nor looks like one is a
#: hub id, which is left alone
INPUT_PATH_FLAGS = ("actor.model_name_or_path", "data.prompt_dataset", "eval.dataset", "reward.remote_url")
#: path flags the job writes
OUTPUT_PATH_FLAGS = ("ckpt.output_dir", "ckpt.path", "logger.tensorboard_dir")
#: set by Ray's job supervisor in the entrypoint's environment: the job's runtime_env and metadata, as JSON
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
_LOCAL_DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow", ".txt")
_DATA_FLAGS = (("--data.prompt_dataset", "data.prompt_dataset"), ("--eval.dataset", "eval.dataset"))


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or path.endswith(_LOCAL_DATA_SUFFIXES + (".py",))


def _entries(value: Optional[str]) -> List[str]:
    """The comma-separated entries of a path flag (a dataset entry may end in OpenRLHF's ``@<data dir>``, which the
    callers split off where they read the file)."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


# ------------------------------------------------------------------------------------------------ the Ray job
def ray_job_config() -> Optional[dict]:
    """The runtime_env and metadata of the ``ray job submit`` this process runs in (None outside one)."""
    raw = os.environ.get(RAY_JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {}


def job_working_dir() -> Optional[str]:
    """The ``working_dir`` the Ray job was submitted with (its URI or path), None without one or outside a job."""
    cfg = ray_job_config() or {}
    return (cfg.get("runtime_env") or {}).get("working_dir") or None


def check_paths(args, cwd: Optional[str] = None) -> List[str]:
    """Errors for paths that would not be reachable where the job uses them; outside a Ray job, relative paths are
    made absolute in ``args``. Empty = fine."""
    cwd = os.path.abspath(cwd or os.getcwd())
    in_job, working_dir = ray_job_config() is not None, job_working_dir()
    errors: List[str] = []
    for dotted in OUTPUT_PATH_FLAGS:
        value = _get(args, dotted)
        if not value or os.path.isabs(os.path.expanduser(value)):
            continue
        if in_job:
            where = "Ray's temporary copy of the job's working_dir" if working_dir else "the job's temporary folder"
            errors.append(
                f"--{dotted} {value} (given, or OpenRLHF's default) is relative: inside `ray job submit` it would be "
                f"written into {where} and "
                "deleted when the job ends. Give an absolute path (on a filesystem every node shares, for several "
                "nodes); the example scripts make SAVE_DIR absolute for you"
            )
        else:
            _set(args, dotted, os.path.normpath(os.path.join(cwd, value)))
    for dotted in INPUT_PATH_FLAGS:
        value = _get(args, dotted)
        entries = _entries(value)
        local = [e for e in entries if _looks_local(e) or os.path.exists(e.split("@")[0])]
        relative = [e for e in local if not os.path.isabs(os.path.expanduser(e))]
        if not relative:
            continue
        if in_job:
            outside = [e for e in relative if not os.path.abspath(e).startswith(cwd + os.sep)]
            if working_dir and outside:
                errors.append(
                    f"--{dotted} {outside[0]} points outside the job's working_dir, the only folder every node "
                    "receives: put it inside the working_dir, or give an absolute path on a shared filesystem"
                )
            continue  # inside the working_dir: the same relative path holds on every node
        resolved = [os.path.normpath(os.path.join(cwd, e)) if e in relative else e for e in entries]
        _set(args, dotted, ",".join(resolved))
    return errors


# ------------------------------------------------------------------------------------------------ the files
def _model_errors(flag: str, name: Optional[str]) -> List[str]:
    if not name:
        return [f"{flag} is required: a local model folder or a hub id (e.g. Qwen/Qwen2.5-3B)"]
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return (
            []
            if os.path.isfile(os.path.join(path, "config.json"))
            else [f"{flag} {name}: the folder has no config.json"]
        )
    if _looks_local(name) or os.path.exists(path):
        return [f"{flag} {name}: no such model folder"]
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return [f"{flag} {name}: neither a local folder nor a hub id (a hub id looks like org/name)"]
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return [f"{flag} {name}: not a local folder, not in the local hub cache, and HF_HUB_OFFLINE is set"]
    return []


def _reward_file_errors(url: str) -> List[str]:
    errors = []
    for entry in _entries(url):
        if not entry.endswith(".py"):
            continue  # an HTTP reward server: OpenRLHF talks to it
        if not os.path.isfile(entry):
            errors.append(f"--reward.remote_url {entry}: no such file")
            continue
        try:
            tree = ast.parse(open(entry, encoding="utf-8").read(), entry)
        except SyntaxError as e:
            errors.append(f"--reward.remote_url {entry}: not valid Python (line {e.lineno}: {e.msg})")
            continue
        names = set()
        for node in ast.walk(tree):  # a def, an assignment or an import that binds reward_func
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update(a.asname or a.name for a in node.names)
        if "reward_func" not in names:
            errors.append(
                f"--reward.remote_url {entry}: defines no reward_func(queries, prompts, labels), which OpenRLHF calls"
            )
    return errors


def _row_problem(row, keys: Dict[str, Optional[str]], chat: bool) -> Optional[str]:
    """What is wrong with one dataset row for OpenRLHF's PromptDataset (None: fine)."""
    if not isinstance(row, dict):
        return f"is a JSON {type(row).__name__}, not an object"
    for flag, key in keys.items():
        if key is not None and key not in row:
            return f"has no key {key!r} ({flag} {key}); its keys: {', '.join(map(repr, row)) or 'none'}"
    value = row[keys["--data.input_key"]]
    if isinstance(value, list) and not chat:
        return (
            f"holds a chat message list under {keys['--data.input_key']!r}, which needs --data.apply_chat_template "
            "(without it OpenRLHF feeds the prompt to the tokenizer as text)"
        )
    if not isinstance(value, (str, list)):
        return f"holds a {type(value).__name__} under {keys['--data.input_key']!r}, not a prompt string or message list"
    return None


def _dataset_errors(flag: str, entry: str, keys: Dict[str, Optional[str]], chat: bool) -> List[str]:
    """Errors of one local dataset file: read in full (JSONL, JSON) or by its schema (Parquet, CSV)."""
    path = os.path.expanduser(entry.split("@")[0])
    if os.path.isdir(path) or not path.endswith((".jsonl", ".json", ".parquet", ".csv")):
        return []  # a dataset folder or a loading script: datasets.load_dataset reads it inside the job
    if path.endswith(".jsonl"):
        n = 0
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    return [f"{flag} {entry}: line {lineno} is not JSON ({e.msg} at column {e.colno})"]
                problem = _row_problem(row, keys, chat)
                if problem:
                    return [f"{flag} {entry}: line {lineno} {problem}"]
                n += 1
        return [] if n else [f"{flag} {entry}: the file holds no rows"]
    if path.endswith(".json"):
        try:
            rows = json.load(open(path, encoding="utf-8"))
        except ValueError as e:
            return [f"{flag} {entry}: not JSON ({e})"]
        rows = rows if isinstance(rows, list) else [rows]
        if not rows:
            return [f"{flag} {entry}: the file holds no rows"]
        for i, row in enumerate(rows):
            problem = _row_problem(row, keys, chat)
            if problem:
                return [f"{flag} {entry}: row {i} {problem}"]
        return []
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path)
        columns, rows = meta.schema_arrow.names, meta.metadata.num_rows
    else:
        import csv

        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            columns = next(reader, [])
            rows = sum(1 for _ in reader)
    if not rows:
        return [f"{flag} {entry}: the file holds no rows"]
    missing = [(k, v) for k, v in keys.items() if v is not None and v not in columns]
    if missing:
        k, v = missing[0]
        return [f"{flag} {entry}: no column {v!r} ({k} {v}); its columns: {', '.join(map(repr, columns))}"]
    return []


def _chat_template_errors(model: Optional[str]) -> List[str]:
    path = os.path.expanduser(model or "")
    if not os.path.isdir(path):
        return []  # a hub model: its tokenizer is read inside the job
    if any(os.path.isfile(os.path.join(path, f)) for f in ("chat_template.jinja", "chat_template.json")):
        return []
    config = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(config) and json.load(open(config, encoding="utf-8")).get("chat_template"):
        return []
    return [
        f"--data.apply_chat_template: the tokenizer of --actor.model_name_or_path {model} has no chat template; "
        "drop the flag (base models take plain prompts) or use a model whose tokenizer has one"
    ]


def check_inputs(args) -> List[str]:
    """What the driver can check of the files a job names before Ray, vLLM or a GPU starts. Empty = fine.

    Without this, a wrong model path or hub id surfaces minutes later as a traceback from inside a Ray actor
    (``HFValidationError``; a missing model even as ``'NoneType' object has no attribute 'lower'``), and a dataset
    without its keys after the models are placed.
    """
    errors = _model_errors("--actor.model_name_or_path (--pretrain)", args.actor.model_name_or_path)
    chat = bool(args.data.apply_chat_template)
    keys = {"--data.input_key": args.data.input_key, "--data.label_key": args.data.label_key}
    for flag, dotted in _DATA_FLAGS:
        for entry in _entries(_get(args, dotted)):
            path = os.path.expanduser(entry.split("@")[0])
            if not os.path.exists(path):
                if _looks_local(entry):
                    errors.append(f"{flag} {entry}: no such file")
                continue
            errors.extend(_dataset_errors(flag, entry, keys, chat))
    if chat and not errors:
        errors.extend(_chat_template_errors(args.actor.model_name_or_path))
    if args.reward.remote_url:
        errors.extend(_reward_file_errors(args.reward.remote_url))
    return errors
