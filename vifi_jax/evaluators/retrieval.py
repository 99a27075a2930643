"""Text↔video retrieval: metrics as CLIP4Clip defines them, and the retrieval evaluator.

`metrics(similarity, caption_video)` takes similarities [num_captions, num_videos] and the video index of
each caption (a video may have several captions) and returns
    {"t2v": {"R1", "R5", "R10", "MdR", "MnR"}, "v2t": {...}}
with recalls in percent and median / mean rank (1 = first). A caption's rank is its video's place among all
videos; a video's rank is the best place among all captions of any of its captions. Ties rank
pessimistically: every other item scored at least as high as the ground truth is counted above it.
"""
import logging
import time

import numpy as np

from data_pipelines import captions, datasets
from vifi_jax import tokenizer
from vifi_jax.evaluators import scoring
from vifi_jax.models import vifi
from vifi_jax.runtime import config_checks, data, encoder

log = logging.getLogger(__name__)


def _ranks(scores, truth):
    """1-based pessimistic rank of column `truth[i]` within row i of `scores`."""
    rows = np.arange(len(truth))
    target = scores[rows, truth][:, None]
    above = (scores >= target).sum(axis=1) - 1  # others at least as high, not counting the truth itself
    return above + 1


def _summary(ranks):
    return {"R1": 100 * float(np.mean(ranks <= 1)), "R5": 100 * float(np.mean(ranks <= 5)),
            "R10": 100 * float(np.mean(ranks <= 10)), "MdR": float(np.median(ranks)), "MnR": float(np.mean(ranks))}


def metrics(similarity, caption_video):
    similarity = np.asarray(similarity, np.float64)
    caption_video = np.asarray(caption_video, np.int64)
    num_captions, num_videos = similarity.shape
    if caption_video.shape != (num_captions,):
        raise ValueError(f"caption_video needs one video index per caption ({num_captions}), got "
                         f"{caption_video.shape}")
    if num_captions == 0 or caption_video.min() < 0 or caption_video.max() >= num_videos:
        raise ValueError(f"caption_video indices must be in 0..{num_videos - 1}")
    t2v = _ranks(similarity, caption_video)
    # v2t: a video's best caption is its highest-scoring one; its rank counts every other caption scored at
    # least as high (O(captions x videos), no captions x captions matrix).
    best = np.full(num_videos, -np.inf)
    np.maximum.at(best, caption_video, similarity[np.arange(num_captions), caption_video])
    covered = np.isin(np.arange(num_videos), caption_video)  # videos without a caption take no part in v2t
    v2t = (similarity[:, covered] >= best[covered]).sum(axis=0)  # includes the best caption itself: rank 1
    return {"t2v": _summary(t2v), "v2t": _summary(v2t)}


def _demo_pairs(config):
    """The first generated clip of each class, captioned by its class's description ("red square moving
    right"): one clip per caption, so every caption has one right answer."""
    split = data.demo_split(config, "retrieval")
    first = {}
    for i, label in enumerate(split.source.labels):
        first.setdefault(int(label), i)
    return [(split.source.paths[i], split.class_names[label]) for label, i in sorted(first.items())], None


def caption_pairs(config):
    """([(video path, caption)], in file order) of `retrieval.captions` (or the demo clips)."""
    r = config.retrieval
    if config.data.source == "demo":
        pairs, root = _demo_pairs(config)
    else:
        if not r.captions:
            raise config_checks.ConfigError("retrieval needs --config.retrieval.captions (a CSV or JSON of captions)")
        pairs, root = captions.read_pairs(data.path_of(config, r.captions)), config.data.root
    if root is None:
        return pairs
    return [(data.video_path(config, video, r.captions), caption) for video, caption in pairs]


def free_text_ids(module, texts, max_words=tokenizer.CONTEXT_LENGTH):
    """Token ids [N, max_words] of free texts as the model scores them: through its learned prompts for a
    prompting model, else as they are; a caption longer than `max_words` tokens (start and end included) is
    cut and ends with the end token, as CLIP4Clip's `--max_words` cuts it."""
    if module.learned_text_prompts:
        texts = vifi.class_texts(texts, None, module.learned_text_prompts)
    return tokenizer.tokenize(texts, context_length=max_words, truncate=True)


def dual_softmax(similarity, axis):
    """Dual softmax at inference (CAMoE, Cheng et al. 2021): each score times the softmax of the scores along
    the other direction (`axis`), a prior that uses the whole test set at once. `similarity` are the model's
    logits (exp(logit_scale)·cosine), so the softmax's temperature is the model's own."""
    similarity = np.asarray(similarity, np.float64)
    with np.errstate(invalid="ignore"):  # an unreadable video's column is all -inf: masked below
        shifted = np.exp(similarity - similarity.max(axis=axis, keepdims=True))
        prior = shifted / shifted.sum(axis=axis, keepdims=True)
    return np.where(np.isfinite(similarity), similarity * prior, -np.inf)


class RetrievalEvaluator:
    """Text->video and video->text retrieval (CLIP4Clip's metrics) over `retrieval.captions`, one view per
    video; an unreadable video is found by no caption."""

    def __init__(self, config, mesh):
        self.config, self.mesh = config, mesh
        pairs = caption_pairs(config)
        index = {video: i for i, video in enumerate(dict.fromkeys(video for video, _ in pairs))}
        self.videos, self.captions = list(index), [caption for _, caption in pairs]
        self.caption_video = [index[video] for video, _ in pairs]

    def run(self, module, params, out=None):
        c, enc = self.config, encoder.Encoder(module, params)
        start = time.time()
        text = enc.text_features(tokenizer.truncate(free_text_ids(module, self.captions, c.retrieval.max_words)))
        source = datasets.VideoFileSource(self.videos, [0] * len(self.videos))
        rows, _, indices, unreadable = scoring.score_views(
            enc, source, data.clip_spec(c, False), text, c.eval.batch_size, self.mesh, lambda logits: logits[:, 0],
            c.data.num_workers, c.seed, c.data.normalize, "retrieval")
        similarity = np.full((len(self.captions), len(self.videos)), -np.inf)  # unreadable: -inf, found by none
        similarity[:, indices] = rows.T
        out = {} if out is None else out
        found = {**metrics(similarity, self.caption_video), "videos": len(self.videos), "captions": len(self.captions),
                 "unreadable": unreadable, "seconds": time.time() - start}
        if c.retrieval.dual_softmax:
            found["dual_softmax"] = {
                "note": "dual softmax at inference (uses the whole test set's scores): not comparable to plain figures",
                "t2v": metrics(dual_softmax(similarity, axis=0), self.caption_video)["t2v"],
                "v2t": metrics(dual_softmax(similarity, axis=1), self.caption_video)["v2t"]}
        out["retrieval"] = found
        return out

    best_metric = "t2v_R1"

    @staticmethod
    def headline(found):
        """The number the best model is kept by: text→video R@1 (plain, never the dual-softmax figure)."""
        return found["t2v"]["R1"]

    @staticmethod
    def summary(found):
        return None
