"""Text↔video retrieval: metrics as CLIP4Clip defines them, and the retrieval evaluator.

`metrics(similarity, caption_video)` takes similarities [num_captions, num_videos] and the video index of
each caption (a video may have several captions) and returns
    {"t2v": {"R1", "R5", "R10", "MdR", "MnR"}, "v2t": {...}}
with recalls in percent and median / mean rank (1 = first). A caption's rank is its video's place among all
videos; a video's rank is the best place among all captions of any of its captions. Ties rank
pessimistically: every other item scored at least as high as the ground truth is counted above it.
"""
import csv
import io
import logging
import os
import time

import numpy as np

from data_pipelines import datasets, files, storage
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


def read_captions(path):
    """[(video id, caption)] from a CSV with `video_id` and `caption` columns (MSR-VTT 1k-A's
    `MSRVTT_JSFUSION_test.csv` has both, with `sentence` for the caption) or a JSON list of
    {"video", "caption"} objects."""
    if path.endswith(".json"):
        rows = files.read_json(path, "captions file")
        if not isinstance(rows, list):
            raise datasets.DatasetError(f"captions file {path} must hold a JSON list of {{\"video\", \"caption\"}} "
                                        f"objects, not a {type(rows).__name__}")
        pairs = []
        for number, row in enumerate(rows):
            if not (isinstance(row, dict) and isinstance(row.get("video"), (str, int))
                    and isinstance(row.get("caption"), str)):
                raise datasets.DatasetError(f"captions file {path}, item {number}: expected an object with a "
                                            f"\"video\" id and a \"caption\" string, got {str(row)[:80]}")
            pairs.append((str(row["video"]), row["caption"]))
    else:
        reader = csv.DictReader(io.StringIO(datasets.read_text(path, "captions file"), newline=""))
        caption_field = "caption" if "caption" in (reader.fieldnames or []) else "sentence"
        if "video_id" not in (reader.fieldnames or []) or caption_field not in reader.fieldnames:
            raise datasets.DatasetError(f"{path}: expected columns video_id and caption (or sentence), got "
                                        f"{reader.fieldnames}")
        pairs = []
        for number, row in enumerate(reader, start=2):
            if row["video_id"] is None or row[caption_field] is None:
                raise datasets.DatasetError(f"{path}:{number}: a row without a video_id or caption")
            pairs.append((row["video_id"], row[caption_field]))
    if not pairs:
        raise datasets.DatasetError(f"{path} lists no captions")
    return pairs


def _demo_pairs(config):
    """Generated clips, each captioned by its class's description ("red square moving right")."""
    split = data.demo_split(config, "retrieval")
    return [(split.source.paths[i], split.class_names[label]) for i, label in enumerate(split.source.labels)], None


def caption_pairs(config):
    """([(video path, caption)], in file order) of `retrieval.captions` (or the demo clips)."""
    r = config.retrieval
    if config.data.source == "demo":
        pairs, root = _demo_pairs(config)
    else:
        if not r.captions:
            raise config_checks.ConfigError("retrieval needs --config.retrieval.captions (a CSV or JSON of captions)")
        captions_file = (r.captions if os.path.isabs(r.captions) or storage.is_remote(r.captions)
                         else storage.join(config.data.splits_dir, r.captions))
        pairs, root = read_captions(captions_file), config.data.root
    if root is None:
        return pairs

    def path(video):  # under data.root (an id that leaves it is refused); as written with an empty root
        name = video + r.video_suffix
        return files.inside(root, name, f"video {video!r} of {r.captions}", links_may_leave=True) if root else name
    return [(path(video), caption) for video, caption in pairs]


def free_text_ids(module, texts):
    """Token ids of free texts as the model scores them: through its learned prompts for a prompting model,
    else as they are; a caption longer than the context is cut, as CLIP4Clip does."""
    if module.learned_text_prompts:
        texts = vifi.class_texts(texts, None, module.learned_text_prompts)
    return tokenizer.tokenize(texts, truncate=True)


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
        text = enc.text_features(free_text_ids(module, self.captions))
        source = datasets.VideoFileSource(self.videos, [0] * len(self.videos))
        rows, _, indices, unreadable = scoring.score_views(
            enc, source, data.clip_spec(c, False), text, c.eval.batch_size, self.mesh, lambda logits: logits[:, 0],
            c.data.num_workers, c.seed, c.data.normalize, "retrieval")
        similarity = np.full((len(self.captions), len(self.videos)), -np.inf)  # unreadable: -inf, found by none
        similarity[:, indices] = rows.T
        out = {} if out is None else out
        out["retrieval"] = {**metrics(similarity, self.caption_video), "videos": len(self.videos),
                            "captions": len(self.captions), "unreadable": unreadable, "seconds": time.time() - start}
        return out

    @staticmethod
    def summary(found):
        return None
