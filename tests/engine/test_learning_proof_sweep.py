"""benchmarks/learning_proof_sweep.py: run specs become the right config changes; captions are scored per
attribute."""
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from mmengine.logging import MMLogger

from sa2va.datasets import EpochDefaultSampler, LengthGroupedSampler, TaskCurriculumSampler

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("learning_proof_sweep", REPO / "benchmarks" / "learning_proof_sweep.py")
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def test_variant_options_reach_every_dataset_and_the_asset_root():
    base = sweep.variant_config({})
    name, opts = sweep.parse_spec("t448:tile=448,ncls=2,iters=500,mask_weight=3,decoder_lr_mult=0.5,"
                                  "optim_wrapper.optimizer.lr=1e-3")
    c = sweep.variant_config(opts)
    assert name == "t448"
    root = base.prepare.root + "_448"
    assert c.prepare.root == root and c.prepare.internvl.image_size == 448
    assert c.model.mllm.model_path.startswith(root) and c.model.grounding_encoder.ckpt_path.startswith(root)
    hook = c.custom_hooks[0]
    for d in list(c.train_dataloader.dataset.datasets) + [hook.datasets.refcocog_val]:
        assert d.tile_size == 448 and d.num_classes_per_sample == 2 and d.data_root.startswith(root)
    assert c.train_cfg.max_iters == 500 and c.param_scheduler[-1].end == 500
    assert c.param_scheduler[0].end == c.param_scheduler[-1].begin == base.param_scheduler[0].end  # warm-up kept
    short = sweep.variant_config(sweep.parse_spec("s:iters=20")[1])  # shorter than the warm-up
    assert [(p.begin, p.end) for p in short.param_scheduler] == [(0, 2), (2, 20)]
    assert c.model.loss_mask.loss_weight == pytest.approx(3 * base.model.loss_mask.loss_weight)
    assert c.optim_wrapper.paramwise_cfg.custom_keys.sam_mask_decoder.lr_mult == 0.5
    assert c.optim_wrapper.optimizer.lr == pytest.approx(1e-3)
    assert "type=" in c.pretty_text  # still dumpable (lazy objects were not built into the tree)
    _, opts = sweep.parse_spec("b:batch=48,sampler=random,eval_items=30,tf_every=250")
    c = sweep.variant_config(opts)
    assert c.train_dataloader.batch_size == 48 and c.train_dataloader.sampler.batch_size == 48
    assert c.train_dataloader.sampler.sampler == dict(type=EpochDefaultSampler, shuffle=True)
    assert "sa2va.datasets.EpochDefaultSampler" in c.pretty_text  # dumpable: what a run writes to its work dir
    assert c.custom_hooks[0].max_items == 30
    assert c.custom_hooks[-1].type == "TeacherForcedSegEval" and c.custom_hooks[-1].interval == 250
    assert c.custom_hooks[-1].dataset == c.custom_hooks[0].datasets.refcocog_val
    _, opts = sweep.parse_spec("p:vit_pos=zeros,seed=3,lr_mult.text_hidden_fcs=10")
    c = sweep.variant_config(opts)
    assert c.prepare.internvl.vision_positions == "zeros" and c.randomness.seed == 3
    assert c.prepare.root == base.prepare.root + "_poszeros" and c.model.mllm.model_path.startswith(c.prepare.root)
    assert c.optim_wrapper.paramwise_cfg.custom_keys == dict(sam_mask_decoder=dict(lr_mult=0.1),
                                                             language_model=dict(lr_mult=base.llm_lr_mult),
                                                             text_hidden_fcs=dict(lr_mult=10.0))
    assert base.train_dataloader.sampler.type is TaskCurriculumSampler and base.train_dataloader.sampler.first_iters
    c = sweep.variant_config(sweep.parse_spec("g:batch=8,caption_first=0")[1])
    assert c.train_dataloader.sampler.sampler.per_device_batch_size == 8 and c.train_dataloader.sampler.first_iters == 0
    c = sweep.variant_config(sweep.parse_spec("n:images=10000,tile=448")[1])
    assert c.prepare.num_images == 10000 and c.prepare.root == base.prepare.root + "_448_n10000"
    assert c.train_dataloader.dataset.datasets[0].data_root.startswith(c.prepare.root)
    c = sweep.variant_config(sweep.parse_spec("c:tasks=caption")[1])
    assert c.train_dataloader.dataset.type.__name__ == "ReferRegionCaptionDataset"
    assert c.custom_hooks[0].datasets == {} and c.custom_hooks[0].caption_datasets
    assert c.train_dataloader.sampler.type is LengthGroupedSampler  # the curriculum's inner sampler
    c = sweep.variant_config(sweep.parse_spec("s:tasks=seg")[1])
    assert c.train_dataloader.dataset.type.__name__ == "ReferSegmDataset"
    assert c.custom_hooks[0].caption_datasets == {} and c.custom_hooks[0].datasets
    c = sweep.variant_config(sweep.parse_spec("cf:caption_first=300,batch=16")[1])
    assert c.train_dataloader.sampler.first_iters == 300 and c.train_dataloader.sampler.first_datasets == [1]
    assert c.train_dataloader.dataset.datasets[1].type.__name__ == "ReferRegionCaptionDataset"
    assert "sa2va.datasets.TaskCurriculumSampler" in c.pretty_text
    with pytest.raises(SystemExit, match="tasks=both"):  # one dataset: nothing to stage
        sweep.variant_config(dict(caption_first="5", tasks="seg"))
    c = sweep.variant_config(sweep.parse_spec("l:llm_seg_from=900,train_seconds=300")[1])
    assert [h.max_seconds for h in c.custom_hooks if h.type.__name__ == "TrainTimeLimitHook"] == [300.0]
    assert c.custom_hooks[-1].start_iter == 900 and "sa2va.engine.SegGradToLLMHook" in c.pretty_text
    c = sweep.variant_config(sweep.parse_spec("c:tasks=caption,sampler=random")[1])  # one dataset: no stages
    assert c.train_dataloader.sampler == dict(type=EpochDefaultSampler, shuffle=True)
    with pytest.raises(SystemExit, match="both, seg or caption"):
        sweep.variant_config(dict(tasks="captions"))
    with pytest.raises(SystemExit, match="grouped or random"):
        sweep.variant_config(dict(sampler="rand"))
    with pytest.raises(SystemExit, match="key=value"):
        sweep.parse_spec("x:ncls")


def test_summarise_takes_the_latest_evaluation_by_iteration_number(tmp_path):
    """iter1000 sorts before iter893 as text; the summary must score the iteration-1000 captions."""
    refs = ["The red circle that is on the left, near the top."]
    evals = tmp_path / "work_r" / "eval"
    evals.mkdir(parents=True)
    for it, pred in ((893, "The blue square that is on the right, near the bottom."), (1000, refs[0])):
        (evals / f"refcocog_val_captions_iter{it}.json").write_text(json.dumps([dict(prediction=pred,
                                                                                     references=refs)]))
    (tmp_path / "train.log").write_text("evaluation at iter 1000: refcocog_val/cIoU 0.5000\n")
    out = sweep.summarise("r", str(tmp_path), str(tmp_path / "train.log"))
    assert out["iter"] == 1000 and out["refcocog_val/cIoU"] == 0.5
    assert out["caption_attribute_accuracy"] == dict(colour=1.0, shape=1.0, hpos=1.0, vpos=1.0)
    assert json.loads((tmp_path / "captions.json").read_text())[0]["prediction"] == refs[0]


def test_attribute_accuracy_reads_the_first_word_of_each_kind():
    refs = ["A red circle located at the top left of the picture.", "The red circle that is on the left, near the top."]
    records = [dict(prediction="A red square located at the top left of the picture.", references=refs),
               dict(prediction="The blue circle that is on the right, near the top.", references=refs)]
    acc = sweep.attribute_accuracy(records)
    assert acc == dict(colour=0.5, shape=0.5, hpos=0.5, vpos=1.0)


class _MaskEcho(torch.nn.Module):
    """Predicts each ground-truth mask (or its complement) as 4x4 low-res logits, like predict_masks."""

    # token 5 + k asks for the k-th (colour, shape); items 0 and 1 share "red" (see _seg_item)
    words = {5: "red circle", 6: "red square", 7: "blue star"}
    tokenizer = SimpleNamespace(pad_token_id=0,
                                decode=lambda ids, skip_special_tokens: "the " + _MaskEcho.words[int(ids[0])])

    seg_token_idx = 7

    def __init__(self, invert=False):
        super().__init__()
        self.invert = invert
        self.text_hidden_fcs = torch.nn.Linear(2, 2)

    def data_preprocessor(self, batch, training):
        return batch

    def predict_masks(self, data):
        sign = -1 if self.invert else 1
        # hidden state of every token: (question token, position); only the [SEG] (last) token's is read
        ids = data["input_ids"].float()
        hidden = torch.stack([ids, torch.arange(ids.shape[1]).expand_as(ids).float()], dim=-1)  # [B, L, 2]
        return {"hidden_states": hidden,
                "pred_masks": [sign * (m[:, ::2, ::2].float() * 20 - 10) for m in data["masks"]]}


def _seg_item(k):
    mask = torch.zeros(1, 8, 8, dtype=torch.uint8)
    mask[0, 2 * k:2 * k + 4, 0:2 * (k + 1)] = 1  # 2x2-block aligned, so 4x4 logits upsample back exactly
    return dict(input_ids=torch.tensor([5 + k, 6, 7]), labels=torch.tensor([-100, 6, 7]), pixel_values=None,
                g_pixel_values=torch.zeros(3, 8, 8, dtype=torch.uint8), masks=mask, prompt_masks=None,
                frames_per_batch=1)


@pytest.mark.parametrize("invert,expected", [(False, 1.0), (True, 0.0)])
def test_teacher_forced_eval_scores_ciou_of_the_predicted_masks(tmp_path, invert, expected):
    hook = sweep.TeacherForcedSegEval(dataset={}, interval=5, max_items=3, batch_size=2)
    hook.dataset = [_seg_item(k) for k in range(3)]
    runner = SimpleNamespace(model=_MaskEcho(invert), iter=9, work_dir=str(tmp_path),
                             logger=MMLogger.get_instance("tf_eval_test"))
    hook.after_train_iter(runner, 0)
    (record,) = [json.loads(line) for line in open(tmp_path / "tf_eval.jsonl")]
    right = 1.0 if expected else 0.0
    assert record == dict(iter=10, cIoU=expected, items=3,
                          outcomes=dict(right=right, over=0.0, wrong=1.0 - right, empty=0.0),
                          precision=right, recall=right,
                          by_colour=dict(blue=[1, right, 0.0], red=[2, right, 0.0]),
                          by_shape=dict(circle=[1, right, 0.0], square=[1, right, 0.0], star=[1, right, 0.0]),
                          # the two red questions' [SEG] states are equal; blue is asked once: no centroid
                          seg_state_colour=1.0, seg_state_colour_by_colour=dict(red=1.0),
                          prompt_colour=1.0, prompt_colour_by_colour=dict(red=1.0))
    runner.iter = 10  # not a multiple of the interval: no evaluation
    hook.after_train_iter(runner, 0)
    assert len(open(tmp_path / "tf_eval.jsonl").readlines()) == 1


class _ReferLike(list):
    """Items with the REFER dataset's ``records`` (one image each) and COCO ``ann_path``."""

    def __init__(self, items, image_ids, ann_path):
        super().__init__(items)
        self.records = [dict(image_id=i) for i in image_ids]
        self.ann_path = ann_path


class _RightOnlyFor(_MaskEcho):
    """The ground-truth mask for the items whose first token is ``token``, its complement for the others."""

    def __init__(self, token):
        super().__init__()
        self.token = token

    def predict_masks(self, data):
        out = super().predict_masks(data)
        out["pred_masks"] = [m if int(t) == self.token else -m for m, t in zip(out["pred_masks"],
                                                                              data["input_ids"][:, 0])]
        return out


def test_teacher_forced_eval_splits_outcomes_by_how_often_the_named_shape_occurs(tmp_path):
    # images 1-4; the questions (see _MaskEcho.words): 1 "red circle", 2 "red square", 3 "blue star", 4 "red circle"
    shapes = {1: ["circle", "circle", "star"], 2: ["square", "circle"], 3: ["star", "star", "star", "square"],
              4: ["square"]}  # image 4 has no circle: its question is not counted by shape occurrence
    names = ["circle", "square", "star"]
    anns = [dict(id=10 * i + j, image_id=i, category_id=names.index(s) + 1)
            for i, objs in shapes.items() for j, s in enumerate(objs)]
    (tmp_path / "instances.json").write_text(json.dumps(dict(
        images=[dict(id=i) for i in shapes], annotations=anns,
        categories=[dict(id=k + 1, name=n) for k, n in enumerate(names)])))
    hook = sweep.TeacherForcedSegEval(dataset={}, interval=1, max_items=4, batch_size=3)
    hook.dataset = _ReferLike([_seg_item(0), _seg_item(1), _seg_item(2), _seg_item(0)], [1, 2, 3, 4],
                              str(tmp_path / "instances.json"))
    runner = SimpleNamespace(model=_RightOnlyFor(token=6), iter=0, work_dir=str(tmp_path),
                             logger=MMLogger.get_instance("tf_eval_shape_count_test"))
    hook.after_train_iter(runner, 0)
    (record,) = [json.loads(line) for line in open(tmp_path / "tf_eval.jsonl")]
    # only the square (alone in its image) is segmented right; the circle occurs twice, the star three times
    assert record["by_shape_count"] == {"1": [1, 1.0, 0.0], "2": [1, 0.0, 0.0], "3+": [1, 0.0, 0.0]}
    assert record["by_shape"]["circle"] == [2, 0.0, 0.0]  # image 4's circle question is still scored


class _ShapeStates(_MaskEcho):
    """[SEG] states that carry only the shape word of the question (crossed with colour and place)."""

    words = {10: "red circle at the top left", 11: "blue circle at the bottom right",
             12: "red star at the top left", 13: "blue star at the bottom right"}
    tokenizer = SimpleNamespace(pad_token_id=0,
                                decode=lambda ids, skip_special_tokens: "the " + _ShapeStates.words[int(ids[0])])

    def predict_masks(self, data):
        out = super().predict_masks(data)
        seeds = [1 if "circle" in self.words[int(t)] else 2 for t in data["input_ids"][:, 0]]
        states = torch.stack([torch.randn(2, generator=torch.Generator().manual_seed(k)) for k in seeds])
        out["hidden_states"] = states[:, None].expand(-1, data["input_ids"].shape[1], -1)
        return out


def test_teacher_forced_eval_says_which_question_words_the_states_carry(tmp_path):
    hook = sweep.TeacherForcedSegEval(dataset={}, interval=1, max_items=4, batch_size=4)
    hook.dataset = []
    for token in _ShapeStates.words:
        item = _seg_item(0)
        item["input_ids"] = torch.tensor([token, 6, 7])
        hook.dataset.append(item)
    runner = SimpleNamespace(model=_ShapeStates(), iter=0, work_dir=str(tmp_path),
                             logger=MMLogger.get_instance("tf_eval_words_test"))
    hook.after_train_iter(runner, 0)
    (record,) = [json.loads(line) for line in open(tmp_path / "tf_eval.jsonl")]
    assert (record["seg_state_shape"], record["seg_state_colour"], record["seg_state_position"]) == (1.0, 0.0, 0.0)


def test_question_share_tells_question_driven_from_image_driven_states():
    g = torch.Generator().manual_seed(0)
    images, questions = torch.randn(6, 16, generator=g), torch.randn(2, 16, generator=g)
    # each image asked question 0 and question 1
    assert sweep.question_share(images, images.clone()) == 0.0  # the state follows the image only
    assert sweep.question_share(questions[0].expand(6, 16), questions[1].expand(6, 16)) == 1.0  # the question only
    mixed = sweep.question_share(images + 0.5 * questions[0], images + 0.5 * questions[1])
    assert 0.05 < mixed < 0.5
    # a large part that every state shares is removed first
    assert sweep.question_share(images + 0.5 * questions[0] + 40, images + 0.5 * questions[1] + 40) == mixed
    assert sweep.question_share(torch.ones(6, 16), torch.ones(6, 16)) != sweep.question_share(images, images)  # NaN


class _EpochRefs:
    """Image i (its SAM2 pixels all i) asked about ref ``epoch % 2`` (_seg_item's question and mask)."""

    accepts_epoch_index = True

    def __len__(self):
        return 6

    def __getitem__(self, index):
        epoch, i = index if isinstance(index, tuple) else (0, index)
        item = _seg_item(epoch % 2)
        item["g_pixel_values"] = torch.full((3, 8, 8), i, dtype=torch.uint8)
        return item


class _StateFrom(_MaskEcho):
    """[SEG] states that depend only on the image or only on the question token."""

    def __init__(self, source):
        super().__init__()
        self.source = source
        self.text_hidden_fcs = torch.nn.Linear(8, 2)

    def predict_masks(self, data):
        out = super().predict_masks(data)
        keys = ([int(g.flatten()[0]) for g in data["g_pixel_values"]] if self.source == "image"
                else data["input_ids"][:, 0].tolist())
        states = torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(int(k))) for k in keys])
        out["hidden_states"] = states[:, None].expand(-1, data["input_ids"].shape[1], -1)
        return out


@pytest.mark.parametrize("source,share", [("image", 0.0), ("question", 1.0)])
def test_teacher_forced_eval_asks_each_image_two_questions(tmp_path, source, share):
    hook = sweep.TeacherForcedSegEval(dataset={}, interval=1, max_items=6, batch_size=4, question_pairs=5)
    hook.dataset = _EpochRefs()
    runner = SimpleNamespace(model=_StateFrom(source), iter=0, work_dir=str(tmp_path),
                             logger=MMLogger.get_instance("tf_eval_pairs_test"))
    hook.after_train_iter(runner, 0)
    (record,) = [json.loads(line) for line in open(tmp_path / "tf_eval.jsonl")]
    assert record["question_pairs"] == 5 and record["seg_state_question_share"] == share
    first, second = hook._pairs[0]
    assert not torch.equal(first["masks"], second["masks"])  # two refs of one image
    assert torch.equal(first["g_pixel_values"], second["g_pixel_values"])


def _outcome(pred, gt):
    from sa2va.evaluation import ReferSegMetric

    return sweep.mask_outcome(ReferSegMetric().add(pred, gt, key=0))


def test_mask_outcome_tells_the_kinds_of_mistake_apart():
    gt = torch.zeros(10, 10, dtype=torch.bool)
    gt[0:4, 0:4] = True  # 16 px
    other = torch.zeros_like(gt)
    other[6:10, 6:10] = True  # another shape of the same size
    assert _outcome(gt.clone(), gt) == ("right", 1.0, 1.0)
    # the target plus one more shape of its size: Dice 2/3, IoU 1/2 -> precision 0.5 is not < 0.5: still right
    assert _outcome(gt | other, gt) == ("right", 0.5, 1.0)
    both_and_more = gt | other
    both_and_more[0:4, 6:10] = True  # the target plus two more
    kind, p, r = _outcome(both_and_more, gt)
    assert (kind, round(p, 3), r) == ("over", 0.333, 1.0)
    assert _outcome(other, gt) == ("wrong", 0.0, 0.0)
    part = torch.zeros_like(gt)
    part[0:1, 0:4] = True  # a quarter of the target
    assert _outcome(part, gt) == ("wrong", 1.0, 0.25)
    assert _outcome(torch.zeros_like(gt), gt) == ("empty", 0.0, 0.0)


def test_internvl_size_options_get_their_own_asset_directory():
    base = sweep.variant_config({})
    c = sweep.variant_config(sweep.parse_spec("w:internvl.text_hidden=768,internvl.text_init_range=0.035")[1])
    assert c.prepare.internvl.text_hidden == 768 and c.prepare.internvl.text_init_range == pytest.approx(0.035)
    assert c.prepare.internvl.text_layers == base.prepare.internvl.text_layers  # the others are kept
    assert c.prepare.root == base.prepare.root + "_text_hidden768_text_init_range0.035"
    assert c.model.mllm.model_path.startswith(c.prepare.root) and c.tokenizer.pretrained_model_name_or_path.startswith(
        c.prepare.root)


def test_sam2_size_options_get_their_own_asset_directory():
    base = sweep.variant_config({})
    c = sweep.variant_config(sweep.parse_spec("w:sam2.d_model=128")[1])
    assert c.prepare.sam2.d_model == 128 and c.prepare.sam2.embed_dim == base.prepare.sam2.embed_dim
    assert c.prepare.root == base.prepare.root + "_sam2_d_model128"
    enc = c.model.grounding_encoder
    assert enc.cfg_path.startswith(c.prepare.root + "/") and enc.ckpt_path.startswith(c.prepare.root + "/")


def test_child_env_deals_gpus_and_shares_the_cores(monkeypatch):
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 64)
    env = sweep.child_env(5, 4, gpus=4, environ={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "8"}
    assert sweep.child_env(0, 1, gpus=1, environ={})["OMP_NUM_THREADS"] == "32"
    assert "CUDA_VISIBLE_DEVICES" not in sweep.child_env(0, 1, gpus=1, environ={})
    assert sweep.child_env(0, 4, gpus=4, environ={"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the caller's
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 32)  # GPUs: the cores the loader workers leave
    assert sweep.child_env(0, 2, gpus=2, environ={}, loader_workers=14)["OMP_NUM_THREADS"] == "2"
    assert sweep.child_env(0, 2, gpus=2, environ={}, loader_workers=20)["OMP_NUM_THREADS"] == "1"
    assert sweep.child_env(0, 2, gpus=0, environ={}, loader_workers=14)["OMP_NUM_THREADS"] == "8"  # CPU: half
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 2)
    assert sweep.child_env(0, 4, gpus=0, environ={})["OMP_NUM_THREADS"] == "1"


def test_stop_children_terminates_and_kills_the_stubborn(tmp_path):
    import subprocess
    import sys
    import time

    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); open(r'%s', 'w').close(); time.sleep(60)" % (tmp_path / "ready")])
    while not (tmp_path / "ready").exists():  # SIGTERM is ignored from here on
        time.sleep(0.05)
    t0 = time.time()
    sweep.stop_children([polite, stubborn], grace_s=1.0)
    assert polite.returncode == -15 and stubborn.returncode == -9
    assert time.time() - t0 < 10


def test_summarise_of_a_stopped_run_keeps_its_teacher_forced_curve(tmp_path):
    (tmp_path / "train.log").write_text(
        "11/27 09:18:22 - mmengine - INFO - Iter(train) [1100/1300]  lr: 1e-4  time: 0.3300  data_time: 0.07\n"
        "11/27 09:18:40 - mmengine - INFO - Iter(train) [1150/1300]  lr: 1e-4  time: 0.3100  data_time: 0.07\n")
    (tmp_path / "tf_eval.jsonl").write_text(json.dumps(dict(iter=975, cIoU=0.7, items=200)) + "\n")
    out = sweep.summarise("r", str(tmp_path), str(tmp_path / "train.log"))
    assert out["last_logged_iter"] == 1150 and "iter" not in out
    assert out["teacher_forced_cIoU"] == [dict(iter=975, cIoU=0.7, items=200)] and out["s_per_iter"] == 0.31
    (tmp_path / "train.log").write_text(  # one log line: its own time, not 0
        "11/27 09:18:22 - mmengine - INFO - Iter(train) [  10/10]  lr: 1e-4  time: 0.3300  data_time: 0.07\n")
    assert sweep.summarise("r", str(tmp_path), str(tmp_path / "train.log"))["s_per_iter"] == 0.33


def test_plot_runs_splits_the_losses_by_task(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("plot_runs", REPO / "benchmarks" / "plot_runs.py")
    plot_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_runs)
    rows = [dict(iter=i, llm_loss=1.0 / i, loss_mask=0.0 if i % 2 else 3.0, loss_dice=0.0 if i % 2 else 1.0)
            for i in range(1, 9)]
    windows = plot_runs.task_windows(rows, window=4)
    assert windows["caption"] == [(4, (1 + 1 / 3) / 2), (8, (1 / 5 + 1 / 7) / 2)]  # odd iterations: no mask loss
    assert windows["segmentation"] == [(4, 4.0), (8, 4.0)]
    run = tmp_path / "run"
    run.mkdir()
    (run / "losses.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (run / "tf_eval.jsonl").write_text(json.dumps(dict(iter=8, cIoU=0.5, items=2)) + "\n")
    with mock.patch.object(sys, "argv", ["plot_runs.py", str(tmp_path / "out.png"), str(run), "--window", "4"]):
        plot_runs.main()
    assert (tmp_path / "out.png").stat().st_size > 0
    assert "seg_state" not in capsys.readouterr().out  # no such records: three panels
    # a run whose records say how well its [SEG] states tell the colours apart gets a fourth panel
    (run / "tf_eval.jsonl").write_text("".join(json.dumps(dict(iter=i, cIoU=0.5, items=2, seg_state_colour=v)) + "\n"
                                               for i, v in ((4, 0.2), (8, 0.95))))
    with mock.patch.object(sys, "argv", ["plot_runs.py", str(tmp_path / "out4.png"), str(run), "--window", "4"]):
        plot_runs.main()
    out = capsys.readouterr().out
    assert "run seg_state_colour: 4:0.20 8:0.95" in out and "seg_state_shape" not in out
    # ... and one with the shape words as well a fifth
    (run / "tf_eval.jsonl").write_text("".join(json.dumps(dict(iter=i, cIoU=0.5, items=2, seg_state_colour=v,
                                                               seg_state_shape=1 - v)) + "\n"
                                               for i, v in ((4, 0.2), (8, 0.95))))
    with mock.patch.object(sys, "argv", ["plot_runs.py", str(tmp_path / "out5.png"), str(run), "--window", "4"]):
        plot_runs.main()
    assert "run seg_state_shape: 4:0.80 8:0.05" in capsys.readouterr().out
    from PIL import Image
    widths = [Image.open(tmp_path / f).width for f in ("out.png", "out4.png", "out5.png")]
    assert widths[0] < widths[1] < widths[2]  # one more panel each


def test_colour_separability_tells_merged_colours_from_separate_ones():
    g = torch.Generator().manual_seed(0)
    centres = {"red": torch.tensor([5.0, 0, 0]), "blue": torch.tensor([0, 5.0, 0]), "green": torch.tensor([0, 0, 5.0])}
    labels = [c for c in centres for _ in range(10)]
    shared = torch.tensor([100.0, 100.0, 100.0])  # a large common part, removed before comparing
    separate = torch.stack([shared + centres[c] + 0.5 * torch.randn(3, generator=g) for c in labels])
    overall, per = sweep.colour_separability(separate, labels)
    assert overall == 1.0 and per == dict(blue=1.0, green=1.0, red=1.0)
    # red and blue merged into one vector: they are told apart at chance, green still always
    merged = separate.clone()
    merged[:20] = shared + torch.tensor([2.5, 2.5, 0]) + 0.5 * torch.randn(20, 3, generator=g)
    overall, per = sweep.colour_separability(merged, labels)
    assert per["green"] == 1.0 and per["red"] + per["blue"] < 1.4
    assert overall < 0.8
    # a colour seen once has no centroid to be told from: left out; no colour (None) too
    overall, per = sweep.colour_separability(separate[:11], labels[:10] + [None])
    assert per == dict(red=1.0)
