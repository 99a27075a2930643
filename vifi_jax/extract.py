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
          snippet features temporal-localisation methods take).

DIR/manifest.jsonl has one JSON object per input, in input order: {"video", "file", "row", "rows"} (the
block is rows [row, row + rows) of the .npy shard `file`; video level: rows = 1) plus "frames" (frame level:
the sampled frame indices) or "windows" (window level: [start, end) frame ranges), and "label" (the class
a --list_file gives the video); or {"video", "error"}
for a video that could not be read. Shards `features-*.npy` hold `shard_size` inputs each; a finished shard
is kept, so a rerun of the same command continues where it stopped (DIR/settings.json records the settings,
and a rerun with other ones is refused). With several JAX processes each
extracts every P-th input and process 0 writes the manifest.
"""
import json
import logging
import os
import sys

import cv2
import jax
import numpy as np
from absl import app, flags

from data_pipelines import cli, datasets, transforms, video
from vifi_jax import api
from vifi_jax.runtime import sharding
from vifi_jax.models import clip

FLAGS = flags.FLAGS
LEVELS = ("video", "frame", "window")
MANIFEST = "manifest.jsonl"
FRAMES_PER_CHUNK = 64  # window level: frames decoded and encoded at a time


def define_flags():
    flags.DEFINE_string("weights", "openai:ViT-B/16", "Model weights (see vifi_jax.load).")
    flags.DEFINE_string("clip_weights", None, "OpenAI weights for official ViFi-CLIP .pth files (token embedding).")
    flags.DEFINE_string("out", None, "Output directory (created).")
    flags.DEFINE_enum("level", "video", LEVELS, "video, frame or window features.")
    flags.DEFINE_integer("window", 16, "Window level: consecutive frames per window.")
    flags.DEFINE_integer("stride", 4, "Window level: frames between window starts.")
    flags.DEFINE_integer("num_frames", 32, "Video and frame levels: frames sampled per video (TSN centres).")
    flags.DEFINE_enum("dtype", "float32", ["float32", "float16"], "Stored feature dtype.")
    flags.DEFINE_integer("shard_size", 1000, "Inputs per .npy shard (the unit a rerun resumes from).")
    flags.DEFINE_integer("batch_size", 8, "Video and frame levels: videos encoded together.")
    flags.DEFINE_string("list_file", None, "An official list file (`path label` lines) naming the videos.")
    flags.DEFINE_string("root", "", "Prefix of the list file's paths.")
    flags.DEFINE_string("texts", None, "Comma-separated texts: export text features instead of video features.")
    flags.DEFINE_string("labels_file", None, "A label CSV (id,name): export the features of the texts the model "
                        "scores these classes by.")
    sharding.define_process_flags()


class ExtractError(ValueError):
    """Inputs or an output directory that cannot be used."""


def test_view(path, num_frames, size):
    """(normalised frames [1, T, size, size, 3], the frame indices sampled): `vifi_jax.load_video`'s view."""
    crops, indices = api.read_test_view(path, num_frames, size)
    return transforms.normalize(crops), indices


def _normalized(x):
    return np.asarray(clip.l2_normalize(x))


def _rows(per_frame, indices, level):
    if level == "video":
        return _normalized(per_frame.mean(axis=0, keepdims=True)), {}
    return _normalized(per_frame), {"frames": [int(i) for i in indices]}


def video_rows(model, path, level, num_frames=32, window=16, stride=4):
    """(rows [n, D], extra manifest fields) of one video at `level`."""
    size = model.config["image_resolution"]
    if level in ("video", "frame"):
        frames, indices = test_view(path, num_frames, size)
        return _rows(np.asarray(model.encode_frames(frames))[0], indices, level)
    total = video.count_frames(path)
    if total < window:
        raise video.VideoError(path, f"{total} frames, fewer than one window of {window}", kind="unreadable")
    embeddings = []
    for start in range(0, total, FRAMES_PER_CHUNK):
        frames = video.read_frames(path, range(start, min(start + FRAMES_PER_CHUNK, total)))
        crops = transforms.normalize(transforms.test_transform(frames, size, 1))
        embeddings.append(np.asarray(model.encode_frames(crops)[0]))
    embeddings = np.concatenate(embeddings)
    starts = range(0, total - window + 1, stride)
    rows = np.stack([embeddings[s:s + window].mean(axis=0) for s in starts])
    return _normalized(rows), {"windows": [[s, s + window] for s in starts]}


def encode_videos(model, paths, level, num_frames, window, stride, batch_size, done=lambda: None):
    """[(rows, extra fields) or (None, error text)] per path, in order. Video and frame levels encode
    `batch_size` videos' views at a time; a video that cannot be read is its own error."""
    results, pending = [None] * len(paths), []

    def encode_pending():
        if not pending:
            return
        try:
            per_frame = np.asarray(model.encode_frames(np.concatenate([frames for _, frames, _ in pending])))
        except (ValueError, MemoryError) as error:  # the whole batch fails: each of its videos says so
            for k, _, _ in pending:
                results[k] = (None, cli.describe(error))
        else:
            for (k, _, indices), embeddings in zip(pending, per_frame):
                results[k] = _rows(embeddings, indices, level)
        pending.clear()

    for k, path in enumerate(paths):
        try:
            if level == "window":
                results[k] = video_rows(model, path, level, num_frames, window, stride)
            else:
                frames, indices = test_view(path, num_frames, model.config["image_resolution"])
                pending.append((k, frames, indices))
        except (video.VideoError, OSError, ValueError, MemoryError, cv2.error) as error:
            results[k] = (None, cli.describe(error))
        if len(pending) >= batch_size:
            encode_pending()
        done()
    encode_pending()
    return results


def _shard_name(process, index):
    return f"features-p{process}-{index:05d}.npy"


def _entries(out, process):
    """The manifest entries process `process` has written, in its input order."""
    path = os.path.join(out, f"manifest-p{process}.partial.jsonl")
    if not os.path.exists(path):
        return []
    entries = []
    with open(path) as f:
        for line in f:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: it and what follows are redone
                break
    return entries


SETTINGS = "settings.json"


def _check_settings(out, settings):
    """A rerun continues only what the same settings wrote; anything else would mix features silently."""
    path = os.path.join(out, SETTINGS)
    settings = json.loads(json.dumps(settings))
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if changed:
            raise ExtractError(f"{out} holds features made with other settings ({', '.join(changed)} differ); use "
                               "another --out, or the same settings to continue it")
    elif jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(settings, f, indent=1)


def _finished(out, process, shard_size):
    """The entries of this process's whole shards whose files exist: where a rerun continues."""
    entries = _entries(out, process)
    missing = [i for i, e in enumerate(entries) if "file" in e and not os.path.exists(os.path.join(out, e["file"]))]
    kept = missing[0] if missing else len(entries)
    return entries[:kept // shard_size * shard_size]


def extract(model, inputs, out, level="video", num_frames=32, window=16, stride=4, dtype="float32",
            shard_size=1000, texts=False, labels=None, batch_size=8):
    """Write features of `inputs` (video paths, or texts with `texts=True`) under `out`; returns the
    manifest entries of all inputs, in order (with each video's class `label` where `labels` are given,
    e.g. from a list file). Resumes from the finished shards of an earlier run."""
    if not inputs:
        raise ExtractError("nothing to extract: give videos, a --list_file with lines, or texts")
    if level not in LEVELS:
        raise ExtractError(f"level must be one of {LEVELS}, got {level!r}")
    if min(window, stride, num_frames, shard_size, batch_size) < 1:
        raise ExtractError("window, stride, num_frames, shard_size and batch_size must be at least 1")
    os.makedirs(out, exist_ok=True)
    _check_settings(out, {"level": level, "num_frames": num_frames, "window": window, "stride": stride,
                          "dtype": dtype, "shard_size": shard_size, "texts": bool(texts),
                          "processes": jax.process_count(), "model": model.config})
    process, count = jax.process_index(), jax.process_count()
    mine = list(range(process, len(inputs), count))
    done = _finished(out, process, shard_size)
    if any(e["video" if not texts else "text"] != inputs[i] for e, i in zip(done, mine)):
        raise ExtractError(f"{out} holds features of other inputs; use another --out")
    partial = os.path.join(out, f"manifest-p{process}.partial.jsonl")
    with open(partial, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in done)
    bar = cli.progress(len(mine), "extract", "text" if texts else "video", initial=len(done))
    try:
        for shard_start in range(len(done), len(mine), shard_size):
            batch = mine[shard_start:shard_start + shard_size]
            name = _shard_name(process, shard_start // shard_size)
            entries, rows, row = [], [], 0
            if texts:
                rows.append(np.asarray(model.encode_text([inputs[i] for i in batch])))
                entries = [{"text": inputs[i], "file": name, "row": k, "rows": 1} for k, i in enumerate(batch)]
                bar.update(len(batch))
            else:
                encoded = encode_videos(model, [inputs[i] for i in batch], level, num_frames, window, stride,
                                        batch_size, lambda: bar.update(1))
                for i, (block, extra) in zip(batch, encoded):
                    if block is None:
                        entries.append({"video": inputs[i], "error": extra})
                    else:
                        entries.append({"video": inputs[i], "file": name, "row": row, "rows": len(block), **extra})
                        rows.append(block)
                        row += len(block)
                    if labels is not None:
                        entries[-1]["label"] = int(labels[i])
            if rows:
                np.save(os.path.join(out, name + ".tmp.npy"), np.concatenate(rows).astype(dtype))
                os.replace(os.path.join(out, name + ".tmp.npy"), os.path.join(out, name))
            with open(partial, "a") as f:
                f.writelines(json.dumps(e) + "\n" for e in entries)
    finally:
        bar.close()
    return _write_manifest(out, inputs, count)


def _write_manifest(out, inputs, count):
    if count > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("vifi_jax.extract: every process wrote its part")
    parts = [_entries(out, p) for p in range(count)]
    entries = [parts[i % count][i // count] for i in range(len(inputs))]
    if jax.process_index() == 0:
        with open(os.path.join(out, MANIFEST + ".tmp"), "w") as f:
            f.writelines(json.dumps(e) + "\n" for e in entries)
        os.replace(os.path.join(out, MANIFEST + ".tmp"), os.path.join(out, MANIFEST))
    return entries


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
    sharding.join_processes_from_flags()
    inputs, texts, labels = read_inputs(argv[1:], FLAGS.list_file, FLAGS.root, FLAGS.texts, FLAGS.labels_file)
    model = api.load(FLAGS.weights, FLAGS.clip_weights)
    if texts == "labels":
        inputs = model.class_texts(inputs)  # the texts the model scores classes by (template, or its prompts)
    entries = extract(model, list(inputs), FLAGS.out, FLAGS.level, FLAGS.num_frames, FLAGS.window, FLAGS.stride,
                      FLAGS.dtype, FLAGS.shard_size, texts, labels, FLAGS.batch_size)
    failed = sum("error" in e for e in entries)
    print(f"wrote {len(entries) - failed} of {len(entries)} to {os.path.join(FLAGS.out, MANIFEST)}"
          + (f"; {failed} could not be read (their errors are in the manifest)" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    cli.run_absl(main)
