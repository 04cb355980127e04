"""Sa2VAPredictor on a tiny model: one mask per generated [SEG] at the original size, from the hidden state at the
[SEG] input position (= the training pass); batching changes nothing; prompts are the training prompts."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval_helpers import ForceTokens, answer_ids, make_image
from sa2va.datasets.encoding import encode_conversation
from sa2va.datasets.samples import SampleBuilder
from sa2va.datasets.text import REGION_CAPTION_QUESTION
from sa2va.inference import Sa2VAPredictor
from sa2va.inference.generation import greedy_generate

QUESTION = "Please segment the red block in this image."


def _predictor(model, sequence=None, **kwargs):
    proc = ForceTokens(sequence) if sequence is not None else None
    return Sa2VAPredictor(model, template="qwen_chat", max_new_tokens=kwargs.pop("max_new_tokens", 64),
                          logits_processor=proc, **kwargs)


@pytest.mark.parametrize("n_seg", [0, 1, 3])
def test_one_mask_per_generated_seg_at_original_size(tiny_model, n_seg):
    tok = tiny_model.tokenizer
    answer = "Sure, " + " and ".join(["<p> red block </p> [SEG]"] * n_seg) + "."
    pred = _predictor(tiny_model, answer_ids(tok, answer)).predict(make_image(), QUESTION)
    assert pred.text.count("[SEG]") == n_seg and "<|im_end|>" not in pred.text and pred.stopped
    assert pred.masks.dtype == torch.bool and tuple(pred.masks.shape) == (n_seg, 90, 130)
    assert pred.phrases == ["red block"] * n_seg


def test_seg_at_the_token_limit_still_gets_its_mask(tiny_model):
    seg = tiny_model.seg_token_idx
    pred = _predictor(tiny_model, [seg], max_new_tokens=3).predict(make_image(), QUESTION)
    assert pred.token_ids == [seg] * 3 and not pred.stopped and pred.masks.shape[0] == 3


def test_masks_equal_the_teacher_forced_training_pass(tiny_model):
    """[SEG] state from cached decoding == final-layer state at the [SEG] input position of one full pass, and
    the masks == the model's own teacher-forced prediction (VideoLLaVASAMModel.predict_masks) upsampled."""
    tok = tiny_model.tokenizer
    image = make_image()
    predictor = _predictor(tiny_model, answer_ids(tok, "Sure, [SEG] and [SEG]."))
    pred = predictor.predict(image, QUESTION)
    assert pred.masks.shape[0] == 2 and 0 < pred.masks.float().mean() < 1  # not a trivial all-or-nothing mask

    tiles = predictor.tile_processor(image)
    prompt = predictor.prompt_ids(predictor._user_text(QUESTION, tiles.shape[0], None))
    predictor.logits_processor = ForceTokens(answer_ids(tok, "Sure, [SEG] and [SEG]."))
    gen = greedy_generate(tiny_model.mllm, [prompt], tiles, [tiles.shape[0]], None, tiny_model.seg_token_idx,
                          predictor.stop, 24, predictor.pad_token_id, predictor.logits_processor)
    ids = torch.cat([prompt, torch.tensor(gen.token_ids[0])])[None]
    with torch.no_grad():
        full = tiny_model.mllm(input_ids=ids, pixel_values=tiles, num_tiles=[tiles.shape[0]])["hidden_states"][0]
    torch.testing.assert_close(gen.seg_hidden[0], full[ids[0] == tiny_model.seg_token_idx], atol=1e-5, rtol=1e-5)

    from sa2va.datasets.image_processing import sam2_image_tensor

    data = dict(input_ids=ids, pixel_values=tiles, num_tiles=[tiles.shape[0]],
                g_pixel_values=[sam2_image_tensor(image, tiny_model.grounding_encoder.image_size)])
    low_res = tiny_model(data, mode="predict")["pred_masks"][0]  # [2, h, w] logits
    expected = F.interpolate(low_res[:, None], size=(90, 130), mode="bilinear", align_corners=False)[:, 0] > 0
    assert (expected != pred.masks).float().mean() < 1e-3  # only float noise at logit ~0 may differ


def test_batched_decoding_equals_one_by_one(tiny_model):
    image = make_image(seed=3)
    texts = [QUESTION, "What is in the upper left corner of this picture?", "hi"]
    seg = tiny_model.seg_token_idx

    def run(batch_size):  # [SEG] forced at step 1 only: rows then continue on their own, with different lengths
        proc = ForceTokens([tiny_model.tokenizer.convert_tokens_to_ids("<p>"), seg], free_after=2)
        return Sa2VAPredictor(tiny_model, max_new_tokens=12, batch_size=batch_size,
                              logits_processor=proc).predict_many(image, texts)

    batched, single = run(8), run(1)
    for b, s in zip(batched, single):
        assert b.token_ids == s.token_ids
        assert b.masks.shape[0] >= 1 and torch.equal(b.masks, s.masks)


def test_prompts_are_the_training_prompts(tiny_model):
    tok = tiny_model.tokenizer
    predictor = _predictor(tiny_model)
    image = make_image()
    builder = SampleBuilder(tok, predictor.template, 1 << 20, predictor.tile_processor)
    _, image_str = builder.image_inputs(image)
    tiles = predictor.tile_processor(image).shape[0]

    def prompt_of(enc):
        return enc["input_ids"][: int(torch.nonzero(enc["labels"] != -100)[0])]

    train = encode_conversation([dict(input=image_str + "\n" + QUESTION, output="It is [SEG].")], tok, "qwen_chat",
                                1 << 20)
    ours = predictor.prompt_ids(predictor._user_text("<image>\n" + QUESTION, tiles, None))
    assert torch.equal(ours, prompt_of(train))

    mask = np.zeros((90, 130), np.uint8)
    mask[10:50, 15:60] = 1
    grid = builder.prompt_masks(mask[None], file="test", record_id=0, fields=["mask"])
    question = REGION_CAPTION_QUESTION.format(index=1)
    item = builder.region_conversation(image, grid, [dict(input=question, output="a red block")], file="test",
                                       record_id=0)
    assert torch.equal(predictor.region_grids(mask[None]), grid)
    ours = predictor.prompt_ids(predictor._user_text(question, tiles, grid[0]))
    assert torch.equal(ours, prompt_of(item))


def test_caption_returns_one_text_per_region(tiny_model):
    predictor = _predictor(tiny_model, max_new_tokens=6)
    masks = np.zeros((3, 90, 130), np.uint8)
    masks[0, 10:50, 15:60] = 1
    masks[1, 40:80, 70:120] = 1
    masks[2, 60:62, 5:7] = 1  # too small for the prompt grid: falls back to the cells it touches
    captions = predictor.caption(make_image(), masks)
    assert len(captions) == 3 and all(isinstance(c, str) and "[SEG]" not in c for c in captions)
    with pytest.raises(ValueError, match="region mask 1 is empty"):
        predictor.caption(make_image(), np.stack([masks[0], np.zeros((90, 130))]))
    with pytest.raises(ValueError, match="region mask 0 is"):
        predictor.caption(make_image(), np.zeros((1, 40, 40)))


def test_multi_token_stop_word_ends_and_is_removed(tiny_model):
    """phi3_chat's '<|end|>' is several tokens for the tiny tokenizer: matched on the decoded text, then cut."""
    tok = tiny_model.tokenizer
    assert len(tok("<|end|>", add_special_tokens=False).input_ids) > 1
    answer = tok("Sure, ", add_special_tokens=False).input_ids + [tiny_model.seg_token_idx] \
        + tok(".<|end|> more text", add_special_tokens=False).input_ids
    pred = Sa2VAPredictor(tiny_model, template="phi3_chat", max_new_tokens=40,
                          logits_processor=ForceTokens(answer)).predict(make_image(), QUESTION)
    assert pred.stopped and pred.text.startswith("Sure, [SEG]") and "<|end" not in pred.text
    assert "more" not in pred.text and pred.masks.shape[0] == 1


def test_bf16_llm_with_fp32_mask_head(tiny_models):
    """The GPU / export layout: bf16 language model, fp32 text_hidden_fcs and SAM2 (no autocast at inference)."""
    from eval_helpers import tiny_model_config
    from sa2va import BUILDER

    cfg = tiny_model_config(tiny_models)
    cfg["mllm"]["torch_dtype"] = "bfloat16"
    model = BUILDER.build(cfg).eval()
    assert model.mllm.lm_head.weight.dtype == torch.bfloat16 and model.text_hidden_fcs[0].weight.dtype == torch.float32
    pred = _predictor(model, answer_ids(model.tokenizer, "Sure, [SEG].")).predict(make_image(), QUESTION)
    assert pred.masks.shape == (1, 90, 130)


def test_evaluation_predictor_resizes_as_the_training_dataset(tiny_model, monkeypatch):
    """predictor_for takes the dataset's resize backend; the SAM2 input then uses it too."""
    from types import SimpleNamespace

    from sa2va.datasets import TileProcessor
    from sa2va.evaluation.refer_eval import predictor_for
    from sa2va.inference import predictor as predictor_module

    dataset = SimpleNamespace(template="qwen_chat", tile_processor=TileProcessor(
        tiny_model.mllm.tile_size, 4, resize_backend="torch"))
    pred = predictor_for(tiny_model, dataset)
    assert pred.tile_processor.resize_backend == "torch" and pred.tile_processor.max_tiles == 4
    backends = []
    real = predictor_module.sam2_image_tensor
    monkeypatch.setattr(predictor_module, "sam2_image_tensor",
                        lambda image, size, backend: backends.append(backend) or real(image, size, backend))
    tok = tiny_model.tokenizer
    pred.logits_processor = ForceTokens(answer_ids(tok, "Sure, [SEG]."))
    out = pred.predict(make_image(), QUESTION)
    assert backends == ["torch"] and tuple(out.masks.shape) == (1, 90, 130)
