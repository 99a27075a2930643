"""Turn a list-file video dataset into a TFDS ArrayRecord dataset of JPEG frames (short side 256).

    python -m data_pipelines.prepare --list_file=ucf_splits/train1.txt --root=/data/ucf101 \
        --labels=labels/ucf_101_labels.csv --name=ucf101_frames --split=train1 --data_dir=/data/tfds

Every frame of every video is decoded once here, resized so its short side is 256 (what the training
transforms resize to anyway) and JPEG-encoded; training then decodes only the T frames it samples
instead of the whole video stream. Read it back with `TfdsSource(name, split, data_dir)`; TSN sampling
sees the same frame count as the video (unless --max_frames subsamples). Needs the TFDS extra
(tensorflow-datasets, and tensorflow-cpu to write). Videos that cannot be read are skipped and listed
in `<data_dir>/<name>/<split>.bad_videos.json`. `python -m data_pipelines.prepare_beam` writes the same dataset
with Apache Beam (many machines, resumable per shard).
"""
import collections
import io
import logging
import multiprocessing
import os
import shutil
import tempfile
import time

import cv2
import numpy as np
from absl import app, flags

from data_pipelines import cli, datasets, files, storage, transforms, video

log = logging.getLogger("data_pipelines.prepare")

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a program (so importing never clashes)."""
    cli.list_file_flags()
    cli.labels_file_flag("Label CSV ('id,name' header) giving the class names.")
    flags.DEFINE_alias("labels", "labels_file")  # the earlier spelling
    flags.DEFINE_string("name", None, "TFDS dataset name to write, e.g. ucf101_frames.")
    flags.DEFINE_string("split", "train", "Split name inside the dataset.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory to write into.")
    flags.DEFINE_string("version", "1.0.0", "Dataset version.")
    flags.DEFINE_integer("short_side", 256, "Frames are resized so that their short side has this length.")
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames.")
    flags.DEFINE_integer("max_frames", 0, "If > 0, keep at most this many frames per video, evenly spaced.")
    flags.DEFINE_integer("workers", 0, "Decode processes (0: one per CPU core).")
    flags.DEFINE_bool("zstd", False, "Keep the zstd compression TFDS gives ArrayRecord files: JPEG frames shrink "
                      "~7% and every training read decompresses the whole video (~3x the read time).")


def encode_video(path, short_side=256, jpeg_quality=90, max_frames=0):
    """All frames of a video (or `max_frames` evenly spaced ones) as JPEG bytes at the given short side.

    One decoding pass that holds one full-resolution frame at a time: each is resized and encoded as soon
    as it is decoded, so a long high-resolution video costs its JPEGs, not its raw frames."""
    cv2.setNumThreads(1)
    keep = None
    if max_frames > 0:
        count = video.packet_count(path)
        if count > max_frames:
            keep = set(np.linspace(0, count - 1, max_frames).round().astype(int).tolist())
    capture = video.open_capture(path)
    params, encoded, size, index = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality], [], None, 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if keep is None or index in keep:
                if size is None:
                    size = transforms.short_side_size(*frame.shape[:2], short_side)
                resized = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                encoded.append(cv2.imencode(".jpg", resized, params)[1].tobytes())
            index += 1
    finally:
        capture.release()
    if not encoded:
        raise video.VideoError(path, "no frame decodes (corrupt file or unsupported codec)", "no_frames")
    return encoded


def dataset_features(class_names):
    """The TFDS features of a prepared dataset (shared with prepare_beam, which must write the same records)."""
    import tensorflow_datasets as tfds
    return tfds.features.FeaturesDict({
        "video": tfds.features.Video(shape=(None, None, None, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(names=class_names),
        "path": tfds.features.Text(),
    })


def example(frames, label, path, root):
    """One video's example: its JPEG frames, label and path relative to `root` (what TfdsSource.name shows)."""
    return {"video": [io.BytesIO(f) for f in frames], "label": label, "path": os.path.relpath(path, root or ".")}


def description(list_file, short_side, jpeg_quality):
    return f"Frames of {list_file} at short side {short_side}, JPEG quality {jpeg_quality}."


def _encode(job):
    index, path, options = job
    try:
        return index, encode_video(path, **options), None
    except Exception as error:  # one bad video must not stop the conversion; it is reported
        return index, None, cli.describe(error)


def _bounded_imap(pool, function, jobs, in_flight):
    """pool.imap with at most `in_flight` results waiting: the writer never falls behind by more."""
    pending = collections.deque()
    for job in jobs:
        pending.append(pool.apply_async(function, (job,)))
        if len(pending) >= in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


UNCOMPRESSED = "group_size:1,uncompressed"  # ArrayRecord writer options of the stored shards (TFDS's are "group_size:1")


def store_uncompressed(data_dir, name, version, split):
    """Rewrite the split's ArrayRecord shards without compression (TFDS always writes zstd:3): JPEG bytes
    barely compress, and a training read then costs a copy instead of decompressing the whole video's frames
    (1.2 vs 3.7 ms for a 4 MB record, benchmarks/README.md). Readers accept either form."""
    from array_record.python import array_record_module

    directory = os.path.join(data_dir, name, version)
    for file_name in sorted(os.listdir(directory)):
        if not file_name.startswith(f"{name}-{split}.array_record-"):
            continue
        path, staging = os.path.join(directory, file_name), os.path.join(directory, f".{file_name}.uncompressed")
        reader = array_record_module.ArrayRecordReader(path)
        writer = array_record_module.ArrayRecordWriter(staging, UNCOMPRESSED)
        try:
            for i in range(reader.num_records()):
                writer.write(reader.read([i])[0])
        finally:
            writer.close()
            reader.close()
        os.replace(staging, path)


def prepare(list_file, root, labels, name, split, data_dir, version="1.0.0", short_side=256, jpeg_quality=90,
            max_frames=0, workers=0, zstd=False):
    """Write the dataset; returns {"videos": n_written, "bad": [...], "seconds": s}. `data_dir` may be a bucket
    (`_prepare_into_bucket`)."""
    if storage.is_remote(data_dir):
        return _prepare_into_bucket(list_file, root, labels, name, split, data_dir, version, short_side, jpeg_quality,
                                    max_frames, workers, zstd)
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(f"prepare writes TFDS datasets and needs TensorFlow Datasets and TensorFlow ({error}): "
                          "pip install -r requirements-tfds.txt") from None

    class_names = datasets.read_labels(labels)
    parsed = datasets.read_list_file(list_file, root, num_classes=len(class_names))
    features = dataset_features(class_names)
    options = dict(short_side=short_side, jpeg_quality=jpeg_quality, max_frames=max_frames)
    jobs = [(i, p, options) for i, p in enumerate(parsed.paths)]
    bad, start = [], time.time()

    def examples(results):
        with cli.progress(len(jobs), f"prepare {split}", "video") as bar:
            for index, frames, error in results:
                if error is not None:
                    bad.append({"file": parsed.paths[index], "reason": error})
                    log.warning("skipping %s: %s", parsed.paths[index], error)
                else:
                    yield index, example(frames, parsed.labels[index], parsed.paths[index], root)
                bar.update(1)

    workers = workers or os.cpu_count()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        tfds.dataset_builders.store_as_tfds_dataset(
            name=name, version=version, features=features, config=None, data_dir=data_dir,
            split_datasets={split: examples(_bounded_imap(pool, _encode, jobs, 2 * workers))},
            file_format="array_record",
            description=description(list_file, short_side, jpeg_quality))
    if not zstd:
        store_uncompressed(data_dir, name, version, split)
    report = {"videos": len(jobs) - len(bad), "bad": bad, "seconds": time.time() - start}
    files.write_json(os.path.join(data_dir, name, f"{split}.bad_videos.json"), report, "report of unreadable videos")
    return report


def _prepare_into_bucket(list_file, root, labels, name, split, data_dir, version, *options):
    """TFDS's ArrayRecord writer writes local files only, so the dataset is prepared in a local temporary
    directory (room for the whole dataset: for large ones use prepare_beam, which stages one shard at a time)
    and uploaded: shards first, the metadata TFDS opens a dataset by last, so a stopped upload leaves nothing
    TFDS would take for a dataset. The temporary directory is removed either way."""
    destination = storage.join(data_dir, name, version)
    if storage.exists(destination):
        raise RuntimeError(f"{destination} exists: dataset {name!r} was already prepared there (one split per "
                           "dataset name); choose another --name or delete it first")
    staging = tempfile.mkdtemp(prefix="vifi_jax_prepare_")
    try:
        report = prepare(list_file, root, labels, name, split, staging, version, *options)
        local = os.path.join(staging, name)
        written = [os.path.relpath(os.path.join(folder, f), local) for folder, _, names in os.walk(local) for f in names]
        for relative in sorted(written, key=lambda r: (r.endswith(".json"), os.path.basename(r) == "dataset_info.json", r)):
            storage.upload(os.path.join(local, relative), storage.join(data_dir, name, *relative.split(os.sep)))
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv):
    cli.configure_logging()
    for required in ("list_file", "labels_file", "name", "data_dir"):
        if not getattr(FLAGS, required):
            raise app.UsageError(f"--{required} is required")
    report = prepare(FLAGS.list_file, FLAGS.root, FLAGS.labels_file, FLAGS.name, FLAGS.split, FLAGS.data_dir,
                     FLAGS.version, FLAGS.short_side, FLAGS.jpeg_quality, FLAGS.max_frames, FLAGS.workers, FLAGS.zstd)
    print(f"wrote {report['videos']} videos to {FLAGS.data_dir}/{FLAGS.name} split {FLAGS.split} in "
          f"{report['seconds']:.1f} s; {len(report['bad'])} unreadable (listed in {FLAGS.split}.bad_videos.json)")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
