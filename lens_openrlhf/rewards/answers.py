"""Answer text handling for the reward files: the last ``\\boxed{}`` of a response, the response cut out
of an OpenRLHF query, and a label reduced to its gold answer string.

Pure Python, cheap: runs in the caller's process (the reward actor, ``lens_openrlhf.data``), imports
neither torch nor Math-Verify. Used by ``math_reward`` (how an answer is scored, steps 1-3), ``gym_reward``,
the verifier worker (``verify_worker``) and ``lens_openrlhf.data`` (labels from MATH solutions).
"""

import re
from typing import Any, Optional

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


def boxed_answer(text: Any) -> Optional[str]:
    """The answer a reward scores: the last ``\\boxed{}``'s content with unescaped ``$`` and outer spaces removed;
    None when the response has no (closed) box or its box is empty. The one definition of "a boxed answer"
    (rewards, evaluation, the demo's boxed share)."""
    boxed = extract_last_boxed(text if isinstance(text, str) else "")
    if boxed is None:
        return None
    return _UNESCAPED_DOLLAR.sub("", boxed).strip() or None


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
