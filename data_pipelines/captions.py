"""Videos with captions, for text–video retrieval: the caption files users have, and a source for training.

Files read as their users have them:
- a CSV with `video_id` and `caption` columns (MSR-VTT 1k-A's `MSRVTT_JSFUSION_test.csv` has `sentence` for
  the caption), or a JSON list of {"video", "caption"} objects: `read_pairs`;
- CLIP4Clip's MSR-VTT training files: `MSRVTT_data.json` (its "sentences": {video_id, caption}) with
  `MSRVTT_train.9k.csv` or `MSRVTT_train.7k.csv` (a `video_id` column) choosing the videos: `read_msrvtt`.

`CaptionedVideoSource` serves training: its label is the index of a caption in `source.captions`. One
element per video whose caption is drawn per element (so per epoch, from the element's seeded generator:
the same after a resume), or with `every_caption` one element per caption (CLIP4Clip's
`--expand_msrvtt_sentences`).
"""
import collections
import csv
import io

import numpy as np

from data_pipelines import datasets, files, video


def read_pairs(path):
    """[(video id, caption)] in file order from a captions CSV or JSON (see the module docstring)."""
    if path.endswith(".json"):
        rows = files.read_json(path, "captions file")
        if isinstance(rows, dict) and "sentences" in rows:
            raise datasets.DatasetError(f"{path} is an MSR-VTT data file (MSRVTT_data.json): for training, name "
                                        "its videos with --config.retrieval.train_videos=MSRVTT_train.9k.csv; "
                                        "for testing, use MSRVTT_JSFUSION_test.csv")
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


def group(pairs):
    """[(video, caption)] -> [(video, [its captions])], videos in order of first appearance."""
    grouped = collections.defaultdict(list)
    for video_id, caption in pairs:
        grouped[video_id].append(caption)
    return list(grouped.items())


def read_video_ids(path):
    """The `video_id` column of a CSV (MSR-VTT's `MSRVTT_train.9k.csv`), in order, each once."""
    reader = csv.DictReader(io.StringIO(datasets.read_text(path, "video list"), newline=""))
    if "video_id" not in (reader.fieldnames or []):
        raise datasets.DatasetError(f"{path}: expected a video_id column (as MSRVTT_train.9k.csv has), got "
                                    f"{reader.fieldnames}")
    ids = [row["video_id"] for row in reader if row["video_id"]]
    if not ids:
        raise datasets.DatasetError(f"{path} lists no videos")
    return list(dict.fromkeys(ids))


def read_msrvtt(data_json, video_list):
    """CLIP4Clip's MSR-VTT training data: [(video id, [captions])] for the videos of `video_list` (in its
    order), captions from `data_json`'s "sentences"."""
    data = files.read_json(data_json, "MSR-VTT data file", "expected CLIP4Clip's MSRVTT_data.json")
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise datasets.DatasetError(f"MSR-VTT data file {data_json} has no \"sentences\" list (expected "
                                    "CLIP4Clip's MSRVTT_data.json)")
    by_video = collections.defaultdict(list)
    for number, item in enumerate(sentences):
        if not (isinstance(item, dict) and isinstance(item.get("video_id"), str)
                and isinstance(item.get("caption"), str)):
            raise datasets.DatasetError(f"{data_json}: sentence {number} is not a {{\"video_id\", \"caption\"}} "
                                        f"object: {str(item)[:80]}")
        by_video[item["video_id"]].append(item["caption"])
    ids = read_video_ids(video_list)
    missing = [v for v in ids if v not in by_video]
    if missing:
        raise datasets.DatasetError(f"{len(missing)} videos of {video_list} have no caption in {data_json}, e.g. "
                                    f"{', '.join(missing[:5])}; are the two files from the same release?")
    return [(v, by_video[v]) for v in ids]


class CaptionedVideoSource:
    """Video files with one or more captions each; label = a caption's index into `self.captions`.

    The loader asks `draw_label(index, label, rng)` after a video is read: one element per video draws one
    of its captions from the element's generator; with `every_caption`, elements are (video, caption)
    pairs and the label stays."""

    def __init__(self, paths, captions_per_video, every_caption=False):
        if len(paths) != len(captions_per_video):
            raise ValueError(f"{len(paths)} videos but {len(captions_per_video)} caption lists")
        empty = [p for p, c in zip(paths, captions_per_video) if not c]
        if empty:
            raise datasets.DatasetError(f"{len(empty)} videos have no caption, e.g. {empty[0]}")
        self.paths, self.every_caption = list(paths), every_caption
        self.captions = [caption for captions in captions_per_video for caption in captions]
        counts = np.array([len(c) for c in captions_per_video], np.int64)
        self.first = np.concatenate([[0], np.cumsum(counts)])  # captions of video v: first[v]..first[v+1]-1
        self.video_of_caption = np.repeat(np.arange(len(paths)), counts)

    def __len__(self):
        return len(self.captions) if self.every_caption else len(self.paths)

    @property
    def num_videos(self):
        return len(self.paths)

    def video_of(self, index):
        """The video an element reads (elements are captions with `every_caption`)."""
        return int(self.video_of_caption[index]) if self.every_caption else int(index)

    def name(self, index):
        return self.paths[self.video_of(index)]

    def load(self, index, choose_indices):
        video_index = self.video_of(index)
        label = int(index) if self.every_caption else int(self.first[video_index])
        return video.read_sampled_frames(self.paths[video_index], choose_indices), label

    def draw_label(self, index, label, rng):
        if self.every_caption:
            return label
        v = self.video_of(index)
        return int(self.first[v] + rng.integers(self.first[v + 1] - self.first[v]))
