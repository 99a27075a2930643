"""Text↔video retrieval: zero-shot evaluation (R@1/5/10, median and mean rank, as CLIP4Clip reports) and
fine-tuning for it (`train`: CLIP4Clip's MSR-VTT meanP recipe on ViFi-CLIP's model).

    --config=configs/retrieval.py --config.retrieval.captions=MSRVTT_JSFUSION_test.csv --config.data.root=VIDEOS
    --config=configs/retrieval.py:smoke        a tiny random model on generated clips captioned by their class
    --config=configs/retrieval.py:train --config.retrieval.train_captions=MSRVTT_data.json
        --config.retrieval.train_videos=MSRVTT_train.9k.csv --config.retrieval.captions=MSRVTT_JSFUSION_test.csv
        --config.data.root=VIDEOS              fine-tune on MSR-VTT 9k, test on 1k-A
    --config=configs/retrieval.py:train,smoke  fine-tune a tiny random model on captioned generated clips

Captions: a CSV with video_id and caption (or sentence) columns — MSR-VTT's 1k-A test split
(`MSRVTT_JSFUSION_test.csv`) is read as it is — or a JSON list of {"video", "caption"}; videos are
`data.root/<video_id><retrieval.video_suffix>`. Training captions: CLIP4Clip's `MSRVTT_data.json` with
`retrieval.train_videos` (`MSRVTT_train.9k.csv` or `MSRVTT_train.7k.csv`), or a CSV/JSON as above.
Evaluates (and trains from) --config.model.init (default openai:ViT-B/16).

The `train` recipe, each value from CLIP4Clip's MSR-VTT meanP command (README of ArrowLuo/CLIP4Clip:
`--lr 1e-4 --coef_lr 1e-3 --batch_size 128 --epochs 5 --max_frames 12 --max_words 32 --sim_header meanP
--expand_msrvtt_sentences`) and its `main_task_retrieval.py` / `BertAdam` defaults:
- lr 1e-7: CLIP's parameters train at lr × coef_lr = 1e-4 × 1e-3; new parameters would take 1e-4, and
  meanP has none, so there is one rate;
- global batch 128, 5 epochs, 12 frames per video, captions cut to 32 tokens (start and end included);
- schedule `warmup_cosine` with `--warmup_proportion 0.1`: linear warmup over the first 10% of updates
  (0.5 of 5 epochs), then a cosine to 0 (BertAdam evaluates its cosine at the absolute progress, so the
  rate drops slightly at the end of warmup, as timm's does here);
- BertAdam's b1 0.9, b2 0.98, eps 1e-6, weight decay 0.2;
- the loss: symmetric InfoNCE on exp(logit_scale)·cosine over the global batch (`vifi_jax.train.contrastive`);
- one caption per video per epoch, drawn at random, as the issue that asked for this recipe specifies
  (70 updates an epoch on 9k). CLIP4Clip's command passes `--expand_msrvtt_sentences`: every caption a
  sample, ~180k an epoch on 9k, ~1,400 updates an epoch, 20x more updates at this lr;
  `--config.retrieval.every_caption=true` gives that;
- frames: resize and centre crop, no augmentation (CLIP4Clip's RawVideoExtractor); uniform frames (TSN
  segment middles; CLIP4Clip samples 1 fps and then `--slice_framepos 2`, uniform).
Differences kept on purpose: frames are normalised with ImageNet's mean/std, as ViFi-CLIP trains and as every
vifi_jax tool (predict, extract, search) reads a video; CLIP4Clip uses CLIP's (`data.normalize=clip` gives
that, but the tools would then see other inputs than the model was trained on). The video feature is
ViFi-CLIP's mean of the frames' projected embeddings; CLIP4Clip's meanP L2-normalises each frame's first.
CLIP4Clip's loop also clips the global gradient norm to 1 and clamps logit_scale to at most ln 100 after
every update; neither is done here.
Differences that remain: BertAdam clips each gradient tensor to norm 1, skips bias correction and does not
decay biases (CLIP's LayerNorms are named ln_*, so CLIP4Clip's no_decay list misses their gains, which it
decays); AdamW here clips nothing and decays every trained tensor.
"""
import ml_collections

from configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, smoke=False, train=False)
    c = common.base_config()
    c.mode = "train" if arg.train else "eval"
    c.task = "retrieval"
    c.retrieval = ml_collections.ConfigDict(dict(
        captions="",            # test captions (CSV or JSON)
        video_suffix=".mp4",
        train_captions="",      # training captions: MSRVTT_data.json (with train_videos) or CSV/JSON
        train_videos="",        # MSR-VTT's MSRVTT_train.9k.csv / MSRVTT_train.7k.csv
        every_caption=False,    # one caption per video per epoch (False) or every caption a sample (True)
        max_words=77,           # caption tokens, start and end included (CLIP's whole context for zero-shot)
        dual_softmax=False))    # also report dual-softmax figures (marked; the plain ones stay the headline)
    c.eval.sets = {"retrieval": common.eval_set("", "")}
    if arg.train:
        c.data.num_frames = 12
        c.retrieval.max_words = 32
        t = c.train
        t.lr, t.min_lr_ratio, t.epochs, t.batch_size, t.reference_world_size = 1e-7, 0.0, 5, 128, 1
        t.warmup_epochs = 0.5
        t.b1, t.b2, t.eps, t.weight_decay = 0.9, 0.98, 1e-6, 0.2
        t.mixup, t.label_smoothing = False, 0.0
        c.eval.best_set = "retrieval"
    if arg.smoke:
        common.smoke(c)
        c.data.demo.num_classes = 8  # retrieval tests one clip per class: 8 distinct captions
        if arg.train:
            c.retrieval.max_words = 16
            c.train.lr, c.train.epochs, c.train.warmup_epochs, c.train.batch_size = 1e-3, 10, 1, 8
            # 40 updates: a checkpoint every 20 (the smoke default of 2 made 20 saves, most of a run's time on
            # 8 devices, where each save slices every replicated tensor per device)
            c.checkpoint.every_steps = 20
    return c
