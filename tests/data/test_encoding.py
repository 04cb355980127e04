"""Templates and the one conversation encoder."""
import pytest
import torch

from encoding_helpers import tokenizer  # noqa: F401  (fixture)
from sa2va.datasets import (
    IGNORE_INDEX,
    PROMPT_TEMPLATES,
    encode_conversation,
    get_template,
    image_token_string,
    region_token_string,
)
from sa2va.tokenizer import IMG_CONTEXT_TOKEN, SEG_TOKEN

TPT = 16  # tokens per 112-px tile of the tiny model


def _turns(n=3, tiles=2):
    turns = [dict(input=f"question {i} about the red circle?", output="Sure, it is [SEG].") for i in range(n)]
    turns[0]["input"] = image_token_string(tiles, TPT) + "\n" + turns[0]["input"]
    if n > 1:
        turns[1]["output"] = "the red circle [SEG] and the blue square [SEG]."
    return turns


def _spans(labels):
    """Contiguous runs of supervised positions as (start, end)."""
    sup = (labels != IGNORE_INDEX).tolist() + [False]
    spans, start = [], None
    for i, s in enumerate(sup):
        if s and start is None:
            start = i
        elif not s and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_image_and_region_strings():
    assert image_token_string(2, 3) == "<img>" + "<IMG_CONTEXT>" * 6 + "</img>"
    assert region_token_string([2, 1]) == ("There are 2 part regions in the picture: region1<vp><IMG_CONTEXT>"
                                           "<IMG_CONTEXT></vp>, region2<vp><IMG_CONTEXT></vp>.\n")
    with pytest.raises(ValueError):
        region_token_string([])
    with pytest.raises(ValueError):
        image_token_string(0, 16)


def test_labels_mask_exactly_the_prompt(tokenizer):
    turns = _turns()
    tpl = get_template("qwen_chat")
    out = encode_conversation(turns, tokenizer, "qwen_chat", max_length=4096)
    ids, labels = out["input_ids"], out["labels"]
    assert ids.dtype == labels.dtype == torch.long and ids.shape == labels.shape
    assert out["turns_kept"] == 3 and not out["truncated"]
    # the whole sequence is exactly the template text, turn after turn
    expected = "".join(tpl["INSTRUCTION"].format(input=t["input"], round=i + 1) + t["output"] + tpl["SUFFIX"]
                       + tpl["SEP"] for i, t in enumerate(turns))
    assert tokenizer.decode(ids) == expected
    # supervised runs are exactly answer + SUFFIX, one per turn; everything supervised has label == id
    spans = _spans(labels)
    assert [tokenizer.decode(ids[a:b]) for a, b in spans] == [t["output"] + tpl["SUFFIX"] for t in turns]
    sup = labels != IGNORE_INDEX
    assert torch.equal(labels[sup], ids[sup])
    # every prompt token (instruction, image tokens, SEP) is masked
    img_ctx = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    assert (labels[ids == img_ctx] == IGNORE_INDEX).all() and int((ids == img_ctx).sum()) == 2 * TPT


def test_seg_count_preserved_and_supervised(tokenizer):
    turns = _turns()
    out = encode_conversation(turns, tokenizer, "qwen_chat", max_length=4096)
    seg = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    is_seg = out["input_ids"] == seg
    assert int(is_seg.sum()) == sum(t["output"].count(SEG_TOKEN) for t in turns) == 4
    assert (out["labels"][is_seg] == seg).all()


def test_truncation_drops_whole_trailing_turns(tokenizer):
    turns = _turns()
    full = encode_conversation(turns, tokenizer, "qwen_chat", max_length=4096)
    two = encode_conversation(turns[:2], tokenizer, "qwen_chat", max_length=4096)
    # room for two turns and part of the third: the third is dropped entirely
    cut = encode_conversation(turns, tokenizer, "qwen_chat", max_length=len(full["input_ids"]) - 1)
    assert cut["turns_kept"] == 2 and cut["truncated"]
    assert torch.equal(cut["input_ids"], two["input_ids"]) and torch.equal(cut["labels"], two["labels"])
    # the [SEG] tokens kept are exactly those of the kept turns (so masks[:n_seg] stay aligned), none cut
    seg = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    assert int((cut["input_ids"] == seg).sum()) == sum(t["output"].count(SEG_TOKEN) for t in turns[:2])
    assert tokenizer.decode(cut["input_ids"]).endswith(turns[1]["output"] + "<|im_end|>\n")
    # exactly at the limit nothing is dropped
    exact = encode_conversation(turns, tokenizer, "qwen_chat", max_length=len(full["input_ids"]))
    assert exact["turns_kept"] == 3 and not exact["truncated"]


def test_first_turn_too_long_is_an_error(tokenizer):
    with pytest.raises(ValueError, match=r"refcoco/instances.json#7: the first turn alone is \d+ tokens"):
        encode_conversation(_turns(tiles=4), tokenizer, "qwen_chat", max_length=32,
                            record_id="refcoco/instances.json#7")


def test_bad_turns(tokenizer):
    with pytest.raises(ValueError, match="no turns"):
        encode_conversation([], tokenizer, "qwen_chat", 100)
    with pytest.raises(ValueError, match="turn 0"):
        encode_conversation([dict(input="hi")], tokenizer, "qwen_chat", 100)


def test_system_is_masked_and_prefixes_first_turn(tokenizer):
    turns = _turns(n=2)
    out = encode_conversation(turns, tokenizer, "qwen_chat", 4096, system="You segment things.")
    text = tokenizer.decode(out["input_ids"])
    assert text.startswith("<|im_start|>system\nYou segment things.<|im_end|>\n<|im_start|>user\n")
    first_sup = _spans(out["labels"])[0][0]
    assert "You segment things." in tokenizer.decode(out["input_ids"][:first_sup])


def test_round_placeholder_and_eos_when_suffix_is_not_eos(tokenizer):
    tpl = dict(INSTRUCTION="Q{round}: {input}\nA: ", SUFFIX="", SUFFIX_AS_EOS=False, SEP="\n")
    out = encode_conversation([dict(input="a", output="b"), dict(input="c", output="d")], tokenizer, tpl, 100)
    ids, labels = out["input_ids"], out["labels"]
    assert tokenizer.decode(ids) == "Q1: a\nA: b<|im_end|>\nQ2: c\nA: d<|im_end|>\n"
    eos = tokenizer.eos_token_id
    assert (labels[ids == eos] == eos).all() and int((ids == eos).sum()) == 2


def test_no_bos_for_qwen_like_tokenizer(tokenizer):
    assert tokenizer.bos_token_id is None
    out = encode_conversation(_turns(1), tokenizer, "qwen_chat", 4096)
    assert out["input_ids"][0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_bos_when_the_tokenizer_adds_one(tokenizer):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    bos = "<|endoftext|>"
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))])
    with_bos = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token="<|im_end|>")
    out = encode_conversation(_turns(1), with_bos, "internlm2_chat", 4096)
    assert out["input_ids"][0] == with_bos.bos_token_id and out["labels"][0] == IGNORE_INDEX
    assert int((out["input_ids"] == with_bos.bos_token_id).sum()) == 1
    # a template whose text already starts with the BOS gets no second one
    tpl = dict(PROMPT_TEMPLATES["internlm2_chat"], INSTRUCTION=bos + PROMPT_TEMPLATES["internlm2_chat"]["INSTRUCTION"])
    out = encode_conversation(_turns(1), with_bos, tpl, 4096)
    assert int((out["input_ids"] == with_bos.bos_token_id).sum()) == 1
    assert out["input_ids"][0] == with_bos.bos_token_id


# ------------------------------------------------------------------------------------------------ templates
def test_named_templates_are_the_reference_data():
    assert set(PROMPT_TEMPLATES) == {"qwen_chat", "phi3_chat", "internlm2_chat"}
    phi3 = get_template("phi3_chat")
    assert phi3["INSTRUCTION"] == "<|user|>\n{input}<|end|>\n<|assistant|>\n"
    assert phi3["SYSTEM"] == "<|system|>\n{system}<|end|>\n"
    assert (phi3["SUFFIX"], phi3["SUFFIX_AS_EOS"], phi3["SEP"], phi3["STOP_WORDS"]) == ("<|end|>", True, "\n",
                                                                                        ["<|end|>"])
    assert get_template("qwen_chat")["STOP_WORDS"] == ["<|im_end|>", "<|endoftext|>"]
    assert get_template("internlm2_chat")["STOP_WORDS"] == ["<|im_end|>"]
    # a copy: mutating it (as the original RefCOCO dataset did) never leaks into the registry
    phi3["INSTRUCTION"] = "x{input}"
    phi3["STOP_WORDS"].append("y")
    assert get_template("phi3_chat")["INSTRUCTION"] == "<|user|>\n{input}<|end|>\n<|assistant|>\n"
    assert get_template("phi3_chat")["STOP_WORDS"] == ["<|end|>"]


def test_template_errors():
    with pytest.raises(ValueError, match="unknown template"):
        get_template("vicuna")
    with pytest.raises(ValueError, match="INSTRUCTION"):
        get_template(dict(SUFFIX="x"))
    with pytest.raises(ValueError, match="unknown keys"):
        get_template(dict(INSTRUCTION="{input}", SUFIX="x"))


def test_tokenizer_template_matches_its_chat_template(tokenizer):
    derived = get_template("tokenizer", tokenizer=tokenizer)
    qwen = get_template("qwen_chat")
    for key in ("SYSTEM", "INSTRUCTION", "SUFFIX", "SEP", "PREFIX"):
        assert derived[key] == qwen[key], key
    turns = _turns()
    lazy = get_template("tokenizer")  # resolved by the encoder against the tokenizer it encodes with
    a = encode_conversation(turns, tokenizer, lazy, 4096)
    b = encode_conversation(turns, tokenizer, "qwen_chat", 4096)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    # the derived strings reproduce apply_chat_template
    msgs = [m for t in turns for m in ({"role": "user", "content": t["input"]},
                                       {"role": "assistant", "content": t["output"]})]
    assert tokenizer.decode(a["input_ids"]) == tokenizer.apply_chat_template(msgs, tokenize=False)


def _with_chat_template(tokenizer, chat_template):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    tok.chat_template = chat_template
    return tok


def test_tokenizer_template_with_default_system_prompt(tokenizer):
    # Qwen2.5-style: a default system prompt when the conversation has none
    chat = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}"
            "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tpl = get_template("tokenizer", tokenizer=_with_chat_template(tokenizer, chat))
    assert tpl["PREFIX"] == "<|im_start|>system\nYou are helpful.<|im_end|>\n"
    assert tpl["SYSTEM"] == "<|im_start|>system\n{system}<|im_end|>\n"
    tok = _with_chat_template(tokenizer, chat)
    out = encode_conversation(_turns(1), tok, tpl, 4096)
    assert tok.decode(out["input_ids"]).startswith(tpl["PREFIX"] + "<|im_start|>user\n")


def test_tokenizer_template_that_cannot_be_expressed(tokenizer):
    # the answer is not followed by a special token: no SUFFIX to train
    chat = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    with pytest.raises(ValueError, match="cannot be written as"):
        get_template("tokenizer", tokenizer=_with_chat_template(tokenizer, chat))
