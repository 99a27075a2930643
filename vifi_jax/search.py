"""Search exported video features by text or by video:

    python -m vifi_jax.search --features=DIR --weights=W --query="someone juggling" [--top_k=5] [--json]
    python -m vifi_jax.search --features=DIR --video=V [--weights=W] [--top_k=5] [--json]

DIR is what `python -m vifi_jax.extract --level=video` wrote. A text query is encoded by the model (as is, or
through the learned prompts of a prompting model); a video query is an exported video (its stored row) or any
other file (encoded as `extract` does, which needs --weights). Videos rank by cosine similarity; the query
video itself is left out.
"""
import json
import logging
import os

import numpy as np
from absl import app, flags

from data_pipelines import cli
from vifi_jax import api, extract

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("features", None, "Directory written by `python -m vifi_jax.extract` (video level).")
    flags.DEFINE_string("query", None, "Text to search for.")
    flags.DEFINE_string("video", None, "Video to find the nearest videos of.")
    flags.DEFINE_string("weights", None, "Model weights (the ones the features were extracted with).")
    flags.DEFINE_string("clip_weights", None, "OpenAI weights for official ViFi-CLIP .pth files (token embedding).")
    flags.DEFINE_integer("top_k", 5, "How many videos to show.")
    flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


class SearchError(ValueError):
    """A features directory or query that cannot be searched."""


def load_index(directory):
    """(video paths, features [N, D] float32) of a video-level export; unreadable videos are left out."""
    path = os.path.join(directory, extract.MANIFEST)
    if not os.path.isfile(path):
        raise SearchError(f"{directory} has no {extract.MANIFEST}: export features first with "
                          "`python -m vifi_jax.extract --level=video --out=DIR VIDEO...`")
    with open(path) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    entries = [e for e in entries if "video" in e and "file" in e]
    if not entries:
        raise SearchError(f"{path} lists no video features")
    if any(e["rows"] != 1 for e in entries):
        raise SearchError(f"{directory} holds frame or window features; search needs --level=video features")
    shards = {name: np.load(os.path.join(directory, name)) for name in {e["file"] for e in entries}}
    return [e["video"] for e in entries], np.stack([shards[e["file"]][e["row"]] for e in entries]).astype(np.float32)


def rank(index_features, query, top_k, exclude=None):
    """[(row, cosine)] of the `top_k` rows nearest to `query`, best first (ties by row)."""
    scores = index_features @ (query / np.linalg.norm(query))
    order = [int(i) for i in np.argsort(-scores, kind="stable") if i != exclude]
    return [(i, float(scores[i])) for i in order[:top_k]]


def search(directory, top_k=5, query=None, video=None, model=None):
    """[{video, score}] for a text `query` or a `video`, best first."""
    if (query is None) == (video is None):
        raise SearchError("give a text query or a video, not both")
    paths, features = load_index(directory)
    exclude = None
    if query is not None:
        if model is None:
            raise SearchError("a text query needs the model (--weights) to encode it")
        vector = np.asarray(model.encode_text(model.free_texts([query])))[0]
    elif video in paths:
        exclude = paths.index(video)
        vector = features[exclude]
    else:
        if model is None:
            raise SearchError(f"{video} is not in {directory}; give --weights to encode it")
        rows, _ = extract.video_rows(model, video, "video")
        vector = rows[0]
    return [{"video": paths[i], "score": score} for i, score in rank(features, vector, top_k, exclude)]


def features_argument(argv):
    """The --features directory of a command that takes no positional arguments (search, tsne)."""
    cli.configure_logging(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.features:
        raise app.UsageError("--features is required")
    return FLAGS.features


def main(argv):
    features_argument(argv)
    model = api.load(FLAGS.weights, FLAGS.clip_weights) if FLAGS.weights else None
    found = search(FLAGS.features, FLAGS.top_k, FLAGS.query, FLAGS.video, model)
    if FLAGS.json:
        print(json.dumps({"query": FLAGS.query, "video": FLAGS.video, "results": found}))
    else:
        for place, hit in enumerate(found, start=1):
            print(f"{place:3d}  {hit['score']:.4f}  {hit['video']}")


if __name__ == "__main__":
    define_flags()
    cli.run_absl(main)
