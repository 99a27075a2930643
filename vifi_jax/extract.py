"""Export video (or text) features to files, for downstream work:

    python -m vifi_jax.extract --weights=W [--clip_weights=C] --out=DIR [--level=video|frame|window]
        [--window=16 --stride=4] [--num_frames=32] [--dtype=float32|float16] [--shard_size=1000] [--batch_size=8]
        (VIDEO... | --list_file=F [--root=R])      or      (--texts="a,b" | --labels_file=L)   [--distributed]

Levels, every embedding L2-normalised and computed by the model's one path (`Model.encode_frames`, whose
mean over frames is `encode_video`):
  video   one row per video: `encode_video` on the official test view (`vifi_jax.load_video`: TSN segment
          centres, short side 256, centre crop 224, ImageNet statistics);
  frame   the `num_frames` sampled frames of that view, one row each;
  window  every `window` consecutive frames of the whole video, every `stride` frames, mean-pooled (the
          snippet features temporal-localisation methods take), plus one window ending at the last frame when
          the strides leave frames after the last window, so every frame is covered; each video is decoded
          once, front to back.

DIR is a feature store (`vifi_jax/features.py` describes its files): manifest.jsonl has one JSON object per
input, in input order: {"video", "file", "row", "rows"} (rows [row, row + rows) of the .npy shard `file`;
video level: rows = 1) plus "frames" (frame level: the sampled frame indices) or "windows" (window level:
[start, end) frame ranges), and "label" (the class a --list_file gives the video); or {"video", "error"} for
a video that could not be read. A finished shard is kept, so a rerun of the same command continues where it
stopped (DIR/settings.json records the settings, which `search` also uses, and a rerun with other ones is
refused). With several JAX processes each extracts every P-th input and process 0 writes the manifest.
"""
import logging
import sys

import cv2
import numpy as np
from absl import app, flags

from data_pipelines import cli, datasets, sampling, storage, transforms, video
from vifi_jax import features
from vifi_jax.cli import flags as cli_flags

FLAGS = flags.FLAGS


def define_flags():
    cli_flags.weights()
    cli_flags.out()
    flags.DEFINE_enum("level", "video", features.LEVELS, "video, frame or window features.")
    flags.DEFINE_integer("window", 16, "Window level: consecutive frames per window.", lower_bound=1)
    flags.DEFINE_integer("stride", 4, "Window level: frames between window starts.", lower_bound=1)
    cli_flags.num_frames("Video and frame levels: frames sampled per video (the centres of this many equal "
                         "segments, TSN).")
    cli_flags.dtype("Stored feature dtype.")
    flags.DEFINE_integer("shard_size", 1000, "Inputs per .npy shard (the unit a rerun resumes from).", lower_bound=1)
    flags.DEFINE_integer("batch_size", 8, "Video and frame levels: videos encoded together.", lower_bound=1)
    cli_flags.list_file()
    flags.DEFINE_string("texts", None, "Comma-separated texts: export text features instead of video features.")
    cli_flags.labels_file("A label CSV (id,name): export the features of the texts the model scores these classes by.")
    cli_flags.processes()


ExtractError = features.FeatureStoreError


def _normalized(x):
    from vifi_jax.models import clip
    return np.asarray(clip.l2_normalize(x))


def _rows(per_frame, indices, level):
    if level == "video":
        return _normalized(per_frame.mean(axis=0, keepdims=True)), {}
    return _normalized(per_frame), {"frames": [int(i) for i in indices]}


def video_rows(model, path, level, num_frames=sampling.NUM_FRAMES, window=16, stride=4):
    """(rows [n, D], extra manifest fields) of one video at `level`."""
    from vifi_jax.runtime import encoder
    size = model.config["image_resolution"]
    if level == "window":
        rows, windows = model.encoder.windows(path, window, stride, size)
        return rows, {"windows": windows}
    crops, indices = encoder.read_test_view(path, num_frames, size)
    return _rows(np.asarray(model.encode_frames(transforms.normalize(crops)))[0], indices, level)


def encode_videos(model, paths, level, num_frames, window, stride, batch_size, done=lambda: None):
    """[(rows, extra fields) or (None, error text)] per path, in order. Video and frame levels encode
    `batch_size` videos' views at a time; a video that cannot be read is its own error."""
    from vifi_jax.runtime import encoder
    results, pending = [None] * len(paths), []
    size = model.config["image_resolution"]

    def encode(batch):
        try:
            per_frame = np.asarray(model.encode_frames(np.concatenate([frames for _, frames, _ in batch])))
        except (ValueError, MemoryError, RuntimeError) as error:
            if isinstance(error, RuntimeError) and not encoder.out_of_memory(error):
                raise
            if len(batch) > 1 and encoder.out_of_memory(error):  # retried one video at a time
                for item in batch:
                    encode([item])
                return
            for k, _, _ in batch:  # the whole batch fails: each of its videos says so
                results[k] = (None, cli.describe(error))
        else:
            for (k, _, indices), embeddings in zip(batch, per_frame):
                results[k] = _rows(embeddings, indices, level)

    def encode_pending():
        if pending:
            encode(list(pending))
        pending.clear()

    for k, path in enumerate(paths):
        try:
            if level == "window":
                results[k] = video_rows(model, path, level, num_frames, window, stride)
            else:
                crops, indices = encoder.read_test_view(path, num_frames, size)
                pending.append((k, transforms.normalize(crops), indices))
        except (video.VideoError, OSError, ValueError, MemoryError, cv2.error) as error:
            results[k] = (None, cli.describe(error))
        if len(pending) >= batch_size:
            encode_pending()
        done()
    encode_pending()
    return results


def settings_of(model, level, num_frames, window, stride, dtype, shard_size, texts, source=None):
    """What a store records about how its features were made (`features.SETTINGS`); `source` is where the
    weights were loaded from ({"weights", "clip_weights"}), so that search can load them again."""
    import jax
    return {"level": level, "num_frames": num_frames, "window": window, "stride": stride, "dtype": dtype,
            "shard_size": shard_size, "texts": bool(texts), "processes": jax.process_count(), "model": model.config,
            "weights": model.fingerprint, "weights_source": source}


def extract(model, inputs, out, level="video", num_frames=sampling.NUM_FRAMES, window=16, stride=4, dtype="float32",
            shard_size=1000, texts=False, labels=None, batch_size=8, source=None):
    """Write features of `inputs` (video paths, or texts with `texts=True`) under `out` (`vifi_jax.features`);
    returns the manifest entries of all inputs, in order (with each video's class `label` where `labels` are
    given, e.g. from a list file). Resumes from the finished shards of an earlier run."""
    if not inputs:
        raise ExtractError("nothing to extract: give videos, a --list_file with lines, or texts")
    if level not in features.LEVELS:
        raise ExtractError(f"level must be one of {features.LEVELS}, got {level!r}")
    if min(window, stride, num_frames, shard_size, batch_size) < 1:
        raise ExtractError("window, stride, num_frames, shard_size and batch_size must be at least 1")
    settings = settings_of(model, level, num_frames, window, stride, dtype, shard_size, texts, source)
    features.claim(out)
    with features.lock(out):
        writer = features.Writer(out, settings, inputs, "text" if texts else "video")
        bar = cli.progress(len(writer.mine), "extract", "text" if texts else "video", initial=len(writer.done))
        try:
            for index, batch in writer.pending():
                entries, rows, row = [], [], 0
                if texts:
                    rows.append(np.asarray(model.encode_text([inputs[i] for i in batch])))
                    entries = [{"text": inputs[i], "row": k, "rows": 1} for k, i in enumerate(batch)]
                    bar.update(len(batch))
                else:
                    encoded = encode_videos(model, [inputs[i] for i in batch], level, num_frames, window, stride,
                                            batch_size, lambda: bar.update(1))
                    for i, (block, extra) in zip(batch, encoded):
                        if block is None:
                            entries.append({"video": inputs[i], "error": extra})
                        else:
                            entries.append({"video": inputs[i], "row": row, "rows": len(block), **extra})
                            rows.append(block)
                            row += len(block)
                        if labels is not None:
                            entries[-1]["label"] = int(labels[i])
                writer.add_shard(index, entries, rows, dtype)
        finally:
            bar.close()
        return writer.finish(len(inputs))


def read_inputs(paths, list_file, root, texts, labels_file):
    """The videos (or texts) a command line names; exactly one kind of source."""
    given = [bool(paths), bool(list_file), bool(texts), bool(labels_file)]
    if sum(given) != 1:
        raise app.UsageError("give videos, or --list_file, or --texts, or --labels_file (exactly one)")
    if list_file:
        parsed = datasets.read_list_file(list_file, root)
        return list(parsed.paths), False, list(parsed.labels)
    if texts:
        return [t.strip() for t in texts.split(",") if t.strip()], True, None
    if labels_file:
        return datasets.read_labels(labels_file), "labels", None
    return list(paths), False, None


def main(argv):
    cli.configure_logging(logging.WARNING)
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    cli_flags.join_processes()
    inputs, texts, labels = read_inputs(argv[1:], FLAGS.list_file, FLAGS.root, FLAGS.texts, FLAGS.labels_file)
    from vifi_jax import api  # jax and the model only once there is work (--help starts at once)
    model = api.load(FLAGS.weights, FLAGS.clip_weights)
    if texts == "labels":
        inputs = model.class_texts(inputs)  # the texts the model scores classes by (template, or its prompts)
    entries = extract(model, list(inputs), FLAGS.out, FLAGS.level, FLAGS.num_frames, FLAGS.window, FLAGS.stride,
                      FLAGS.dtype, FLAGS.shard_size, texts, labels, FLAGS.batch_size,
                      {"weights": FLAGS.weights, "clip_weights": FLAGS.clip_weights})
    failed = sum("error" in e for e in entries)
    print(f"wrote {len(entries) - failed} of {len(entries)} to {storage.join(FLAGS.out, features.MANIFEST)}"
          + (f"; {failed} could not be read (their errors are in the manifest)" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    cli.run(main, positional=True)
