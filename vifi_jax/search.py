"""Search exported video features by text or by video:

    python -m vifi_jax.search --features=DIR --weights=W --query="someone juggling" [--top_k=5] [--json]
    python -m vifi_jax.search --features=DIR --video=V [--weights=W] [--top_k=5] [--json]

DIR is what `python -m vifi_jax.extract --level=video` wrote. A text query is encoded by the model (as is, or
through the learned prompts of a prompting model); a video query is an exported video (its stored row) or any
other file, encoded as the store's features were (its settings: frames per video), which needs --weights.
The weights must be the ones the features were made with. Videos rank by cosine similarity; the query video
itself is left out.
"""
import json

import numpy as np
from absl import flags

from data_pipelines import cli
from vifi_jax import features
from vifi_jax.cli import flags as cli_flags

FLAGS = flags.FLAGS


def define_flags():
    cli_flags.features()
    flags.DEFINE_string("query", None, "Text to search for.")
    flags.DEFINE_string("video", None, "Video to find the nearest videos of.")
    cli_flags.weights(default=None, help_text="Model weights; default: the weights the features were exported with "
                      "(as `extract --weights` named them).")
    cli_flags.top_k()
    cli_flags.json_output("Print one JSON object instead of a table.")


SearchError = features.FeatureStoreError


def load_index(directory):
    """(video paths, features [N, D] float32) of a video-level store; unreadable videos are left out."""
    store = features.read(directory, level="video")
    return [e["video"] for e in store.entries], store.features


def rank(index_features, query, top_k, exclude=None):
    """[(row, cosine)] of the `top_k` rows nearest to `query`, best first (ties by row)."""
    scores = index_features @ (query / np.linalg.norm(query))
    order = [int(i) for i in np.argsort(-scores, kind="stable") if i != exclude]
    return [(i, float(scores[i])) for i in order[:top_k]]


def same_model(settings, model):
    """Whether `model` is the one a store's features were made with: its weights' fingerprint (stores made
    before fingerprints were recorded: its CLIP fields)."""
    from vifi_jax.models import clip
    if "weights" in settings:
        return settings["weights"] == model.fingerprint
    fields = lambda config: {k: v for k, v in config.items() if k not in clip.SWITCHES}
    return fields(settings.get("model") or {}) == fields(json.loads(json.dumps(model.config)))


def search(directory, top_k=5, query=None, video=None, model=None):
    """[{video, score}] for a text `query` or a `video`, best first. A query is encoded as the store's
    features were made (its settings: the frames per video), by the model they were made with."""
    if (query is None) == (video is None):
        raise SearchError("give a text query or a video, not both")
    store = features.read(directory, level="video")
    paths, index = [e["video"] for e in store.entries], store.features
    if model is not None and not same_model(store.settings, model):
        raise SearchError(f"{directory} was exported with another model (other weights); a query must be "
                          "encoded by the same one: give the --weights the features were made with")
    if model is not None and index.shape[1] != model.config["embed_dim"]:
        raise SearchError(f"{directory}: its features are {index.shape[1]}-dimensional but the model's embeddings "
                          f"are {model.config['embed_dim']}-dimensional; export the features with this model")
    exclude = None
    if query is not None:
        if model is None:
            raise SearchError("a text query needs the model (--weights) to encode it")
        vector = np.asarray(model.encode_text(model.free_texts([query])))[0]
    elif video in paths:
        exclude = paths.index(video)
        vector = index[exclude]
    else:
        if model is None:
            raise SearchError(f"{video} is not in {directory}; give --weights to encode it")
        from vifi_jax.runtime import encoder
        frames = encoder.load_video(video, store.settings["num_frames"], model.config["image_resolution"])
        vector = np.asarray(model.encode_video(frames))[0]
    return [{"video": paths[i], "score": score} for i, score in rank(index, vector, top_k, exclude)]


def weights_for(directory, weights, clip_weights):
    """The model a query is encoded with: --weights, else the weights `extract` recorded in the store."""
    from vifi_jax import api  # jax and the model only once a query needs them (--help starts at once)
    if weights:
        return api.load(weights, clip_weights)
    settings = features.read_settings(directory)
    source = settings.get("weights_source") or {}
    if not source.get("weights"):
        return None
    return api.load(source["weights"], clip_weights or source.get("clip_weights"))


def main(argv):
    directory = cli_flags.features_directory()
    needs_model = FLAGS.query is not None or FLAGS.video not in load_index(directory)[0]
    model = weights_for(directory, FLAGS.weights, FLAGS.clip_weights) if needs_model else None
    found = search(directory, FLAGS.top_k, FLAGS.query, FLAGS.video, model)
    if FLAGS.json:
        print(json.dumps({"query": FLAGS.query, "video": FLAGS.video, "results": found}))
    else:
        for place, hit in enumerate(found, start=1):
            print(f"{place:3d}  {hit['score']:.4f}  {hit['video']}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
