"""Chat templates: the strings that wrap each conversation turn.

A template is a plain dict with the xtuner-0.x keys, so Sa2VA configs read the same:

=================  =========================================================================================
``SYSTEM``         wraps the system text: ``SYSTEM.format(system=...)``; used only when a system text is given
``INSTRUCTION``    wraps one user input: ``INSTRUCTION.format(input=..., round=i+1)`` (the prompt, never trained)
``SUFFIX``         appended to every answer and trained with it (the end-of-turn marker the model must emit)
``SUFFIX_AS_EOS``  True when ``SUFFIX`` ends a turn; False appends the tokenizer's EOS (trained) after ``SUFFIX``
``SEP``            text between turns, after each answer (not trained)
``STOP_WORDS``     strings that end generation
``PREFIX``         (optional, only tokenizer-derived templates) text before the first turn when no system text
                   is given, e.g. a chat template's default system prompt; ``''`` otherwise
=================  =========================================================================================

Templates come from :func:`get_template`:

* a name of :data:`PROMPT_TEMPLATES` (``qwen_chat``, ``phi3_chat``, ``internlm2_chat``: the data of xtuner 0.1.23,
  which Sa2VA's configs name), or
* a dict with at least ``INSTRUCTION`` (the other keys default to empty / no system), or
* ``'tokenizer'``: the tokenizer's own Jinja chat template, turned into the same five strings by rendering a probe
  conversation (:func:`template_from_tokenizer`). Pass ``tokenizer=`` to resolve it at once; without it a lazy
  marker dict is returned and :func:`resolve_template` (called by the encoder) resolves it against the tokenizer
  that encodes. Chat templates that cannot be written as these strings (e.g. ones that rewrite earlier turns)
  are rejected with a ``ValueError`` rather than approximated.
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping

TEMPLATE_KEYS = ("SYSTEM", "INSTRUCTION", "SUFFIX", "SUFFIX_AS_EOS", "SEP", "STOP_WORDS")
_OPTIONAL_KEYS = ("NAME", "PREFIX", "FROM_TOKENIZER")

TOKENIZER_TEMPLATE = "tokenizer"

# Data from xtuner 0.1.23 xtuner/utils/templates.py (reference §3.1).
PROMPT_TEMPLATES: dict[str, dict] = {
    "qwen_chat": dict(
        SYSTEM="<|im_start|>system\n{system}<|im_end|>\n",
        INSTRUCTION="<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
        SUFFIX="<|im_end|>",
        SUFFIX_AS_EOS=True,
        SEP="\n",
        STOP_WORDS=["<|im_end|>", "<|endoftext|>"],
    ),
    "phi3_chat": dict(
        SYSTEM="<|system|>\n{system}<|end|>\n",
        INSTRUCTION="<|user|>\n{input}<|end|>\n<|assistant|>\n",
        SUFFIX="<|end|>",
        SUFFIX_AS_EOS=True,
        SEP="\n",
        STOP_WORDS=["<|end|>"],
    ),
    "internlm2_chat": dict(
        SYSTEM="<|im_start|>system\n{system}<|im_end|>\n",
        INSTRUCTION="<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
        SUFFIX="<|im_end|>",
        SUFFIX_AS_EOS=True,
        SEP="\n",
        STOP_WORDS=["<|im_end|>"],
    ),
}

_DEFAULTS = dict(SYSTEM="", SUFFIX="", SUFFIX_AS_EOS=True, SEP="", STOP_WORDS=[], PREFIX="")


def get_template(name_or_dict: str | Mapping, tokenizer=None) -> dict:
    """Return a template dict (a fresh copy; mutating it never changes the registry).

    Args:
        name_or_dict: a name of :data:`PROMPT_TEMPLATES`, ``'tokenizer'``, or a dict with at least ``INSTRUCTION``.
        tokenizer: only for ``'tokenizer'``: resolve the chat template now instead of at encoding time.
    """
    if isinstance(name_or_dict, str):
        if name_or_dict == TOKENIZER_TEMPLATE:
            if tokenizer is not None:
                return template_from_tokenizer(tokenizer)
            return dict(NAME=TOKENIZER_TEMPLATE, FROM_TOKENIZER=True, **{k: None for k in TEMPLATE_KEYS})
        if name_or_dict not in PROMPT_TEMPLATES:
            raise ValueError(f"unknown template {name_or_dict!r}; known: "
                             f"{sorted(PROMPT_TEMPLATES) + [TOKENIZER_TEMPLATE]}, or pass a dict")
        return _complete(PROMPT_TEMPLATES[name_or_dict], name_or_dict)
    if isinstance(name_or_dict, Mapping):
        if name_or_dict.get("FROM_TOKENIZER"):
            return template_from_tokenizer(tokenizer) if tokenizer is not None else dict(name_or_dict)
        return _complete(name_or_dict, name_or_dict.get("NAME", "custom"))
    raise TypeError(f"template must be a name or a dict, got {type(name_or_dict).__name__}")


def resolve_template(template: str | Mapping, tokenizer) -> dict:
    """A complete template dict; a lazy ``'tokenizer'`` template is derived from ``tokenizer`` here (cached)."""
    return get_template(template, tokenizer=tokenizer)


def _complete(template: Mapping, name: str) -> dict:
    unknown = set(template) - set(TEMPLATE_KEYS) - set(_OPTIONAL_KEYS)
    if unknown:
        raise ValueError(f"template {name!r} has unknown keys {sorted(unknown)}; allowed: "
                         f"{list(TEMPLATE_KEYS) + list(_OPTIONAL_KEYS)}")
    instruction = template.get("INSTRUCTION")
    if not isinstance(instruction, str) or "{input}" not in instruction:
        raise ValueError(f"template {name!r}: INSTRUCTION must be a string containing '{{input}}', got {instruction!r}")
    system = template.get("SYSTEM") or ""
    if system and "{system}" not in system:
        raise ValueError(f"template {name!r}: SYSTEM must contain '{{system}}', got {system!r}")
    out = {k: template.get(k, _DEFAULTS.get(k)) for k in TEMPLATE_KEYS}
    out["SYSTEM"] = system
    out["STOP_WORDS"] = list(out["STOP_WORDS"] or [])
    out["PREFIX"] = template.get("PREFIX") or ""
    out["NAME"] = name
    return out


# ---------------------------------------------------------------------------------------------------------------
# The tokenizer's own chat template, as the same strings.

# Probe texts: plain words, so templates that strip or trim content leave them intact.
_U1, _A1, _U2, _A2, _SYS = "QZXUSERONEQZX", "QZXANSWERONEQZX", "QZXUSERTWOQZX", "QZXANSWERTWOQZX", "QZXSYSTEMQZX"
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def template_from_tokenizer(tokenizer) -> dict:
    """Express ``tokenizer.chat_template`` as SYSTEM / INSTRUCTION / SUFFIX / SEP strings.

    Rendering ``[user U1]`` and ``[user U1, assistant A1, user U2]`` (with the generation prompt) gives
    ``INSTRUCTION`` (the text around U2) and the text between A1 and U2 = ``SUFFIX + SEP + <instruction head>``.
    ``SUFFIX`` is the special (added) token that directly follows the answer (``<|im_end|>``, ``<|end|>``,
    ``<|eot_id|>`` ...), ``SEP`` the whitespace after it. The result is verified by re-rendering a two-turn
    conversation with and without a system text; any difference raises ``ValueError``.
    """
    chat_template = getattr(tokenizer, "chat_template", None)
    if not chat_template:
        raise ValueError(f"template 'tokenizer': {type(tokenizer).__name__} has no chat_template; "
                         f"name a template instead ({sorted(PROMPT_TEMPLATES)})")
    cached = _CACHE.get(tokenizer)
    if cached is not None and cached[0] == chat_template:
        return dict(cached[1], STOP_WORDS=list(cached[1]["STOP_WORDS"]))
    template = _derive(tokenizer)
    _CACHE[tokenizer] = (chat_template, template)
    return dict(template, STOP_WORDS=list(template["STOP_WORDS"]))


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _escape(text: str) -> str:
    """Literal text inside a ``str.format`` pattern."""
    return text.replace("{", "{{").replace("}", "}}")


def _derive(tokenizer) -> dict:
    def fail(why: str) -> ValueError:
        return ValueError(f"template 'tokenizer': the chat template of {getattr(tokenizer, 'name_or_path', '')!r} "
                          f"cannot be written as SYSTEM/INSTRUCTION/SUFFIX/SEP strings ({why}); "
                          f"name a template instead ({sorted(PROMPT_TEMPLATES)}) or pass a template dict")

    user = lambda text: {"role": "user", "content": text}  # noqa: E731
    assistant = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    one = _render(tokenizer, [user(_U1)], True)
    two = _render(tokenizer, [user(_U1), assistant(_A1), user(_U2)], True)
    if _U1 not in one or not two.startswith(one):
        raise fail("a later turn changes the text of an earlier one")
    after_input = one[one.index(_U1) + len(_U1):]               # e.g. "<|im_end|>\n<|im_start|>assistant\n"
    rest = two[len(one):]                                       # A1 + SUFFIX + SEP + head + U2 + after_input
    if not (rest.startswith(_A1) and rest.endswith(_U2 + after_input)):
        raise fail("turns are not rendered the same way")
    between = rest[len(_A1):len(rest) - len(_U2 + after_input)]
    suffix = next((tok for tok in sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
                   if between.startswith(tok)), None)
    if suffix is None:
        raise fail(f"no special token right after the answer (found {between[:20]!r})")
    tail = between[len(suffix):]
    sep = tail[:len(tail) - len(tail.lstrip())]
    head = tail[len(sep):]                                      # e.g. "<|im_start|>user\n"
    turn_one = head + _U1 + after_input
    if not one.endswith(turn_one):
        raise fail("the first turn is rendered differently from later ones")
    prefix = one[:len(one) - len(turn_one)]                     # default system prompt / BOS text, usually ''

    system = ""
    try:
        with_system = _render(tokenizer, [{"role": "system", "content": _SYS}, user(_U1)], True)
    except Exception:  # noqa: BLE001 - templates without a system role raise their own error types
        with_system = None
    if with_system is not None:
        if not with_system.endswith(turn_one) or with_system.count(_SYS) != 1:
            raise fail("the system message is not a plain prefix")
        system = _escape(with_system[:len(with_system) - len(turn_one)]).replace(_SYS, "{system}")

    template = dict(
        NAME=TOKENIZER_TEMPLATE,
        SYSTEM=system,
        INSTRUCTION=_escape(head) + "{input}" + _escape(after_input),
        SUFFIX=suffix,
        SUFFIX_AS_EOS=True,
        SEP=sep,
        STOP_WORDS=list(dict.fromkeys([suffix] + ([tokenizer.eos_token] if tokenizer.eos_token else []))),
        PREFIX=prefix,
    )
    _verify(tokenizer, template, fail)
    return template


def _verify(tokenizer, template: dict, fail) -> None:
    """Re-render two-turn conversations with the derived strings and compare with the chat template."""
    turns = [(_U1, _A1), (_U2, _A2)]
    messages = [m for u, a in turns for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
    body = "".join(template["INSTRUCTION"].format(input=u, round=i + 1) + a + template["SUFFIX"] + template["SEP"]
                   for i, (u, a) in enumerate(turns))
    cases = [(messages, template["PREFIX"] + body)]
    if template["SYSTEM"]:
        cases.append(([{"role": "system", "content": _SYS}] + messages,
                      template["SYSTEM"].format(system=_SYS) + body))
    for msgs, ours in cases:
        theirs = _render(tokenizer, msgs, False)
        if theirs != ours and theirs != ours[:len(ours) - len(template["SEP"])]:
            raise fail(f"re-rendering differs: chat template {theirs!r} vs derived {ours!r}")
