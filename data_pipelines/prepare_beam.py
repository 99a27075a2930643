"""`data_pipelines.prepare` as an Apache Beam pipeline: the same TFDS ArrayRecord dataset, made by many workers.

    python -m data_pipelines.prepare_beam --list_file=k400/train.txt --root=gs://BUCKET/k400 \
        --labels_file=labels/kinetics_400_labels.csv --name=k400_frames --split=train --data_dir=gs://BUCKET/tfds \
        -- --runner=DataflowRunner --project=P --region=R --temp_location=gs://BUCKET/tmp ...

Flags are prepare's (plus --videos_per_shard); after `--` come Beam pipeline options. Without any, it runs
on the DirectRunner in multi_processing mode with --workers processes (0: one per CPU core).

It writes what `prepare` writes: the same records in the same order, features.json, dataset_info.json (but
shard lengths) and `<split>.bad_videos.json` (but "seconds"). prepare's writer orders records by TFDS's hash
of each key (the video's index, salted with the split); that needs no decoding, so the order is planned up
front and shard s holds its positions [s * videos_per_shard, (s + 1) * videos_per_shard), less unreadable
videos. Only shard boundaries differ (TFDS sizes shards by bytes, known only after decoding). Records are
serialized in protobuf's deterministic field order (a rerun writes identical bytes); prepare's field order
varies per process (protobuf randomises map order), so the two are equal as parsed records, JPEG bytes included.

Not TFDS's own Beam support (`store_as_tfds_dataset` with a PTransform and `beam_runner`): its BeamWriter
groups every serialized example by shard (a shuffle of the whole dataset, ~1 TB of JPEGs for Kinetics-400),
writes into an `incomplete.*` directory that a crash throws away (no resume), writes zstd (prepare rewrites
it uncompressed) and has no place for unreadable videos. Here a shard is one element: one worker decodes its
videos and writes it, nothing is shuffled; TFDS names the shards and writes the metadata (DatasetInfo).

Resumed per shard: a shard is written under a temporary name, renamed when complete, then its marker
`<version>/.<split>.beam/SSSSS.json` is written; a rerun decodes only shards without a marker. With every
marker there, bad_videos.json and then dataset_info.json are written and the markers removed; a split with
a dataset_info.json is finished and a rerun does nothing. An unreadable video is listed, never fatal.
`list_file` and `labels_file` are read by the launcher; `root` and `data_dir` may be buckets (a bucket video
is streamed to FFmpeg by `data_pipelines.video`); checked against a GCS emulator only (gcsfs).
"""
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid

from absl import app, flags

from data_pipelines import cli, datasets, files, prepare, storage

log = logging.getLogger("data_pipelines.prepare_beam")

FLAGS = flags.FLAGS
NAMESPACE = "prepare_beam"  # of the Beam counters: "videos" (decoding attempts) and "bad"


def define_flags():
    prepare.define_flags()
    flags.DEFINE_integer("videos_per_shard", 128, "Videos per ArrayRecord shard: the unit of work and of resuming.")


def _import_beam():
    try:
        import apache_beam as beam
    except ImportError as error:
        raise ImportError(f"prepare_beam needs Apache Beam ({error}): pip install -r requirements-beam.txt") from None
    return beam


def _read_json(path):
    return files.read_json(path, "prepare_beam state file", "delete the dataset directory to start over")


def plan_shards(count, split, videos_per_shard):
    """Video indices per shard: prepare's record order (TFDS's hash of the index, salted with the split)."""
    from tensorflow_datasets.core import hashing
    order = sorted(range(count), key=hashing.Hasher(split).hash_key)
    return [order[i:i + videos_per_shard] for i in range(0, count, videos_per_shard)]


def _template(config):
    from tensorflow_datasets.core import naming
    return naming.ShardedFileTemplate(data_dir=config["directory"], dataset_name=config["name"],
                                      split=config["split"], filetype_suffix="array_record")


def _marker(config, shard):
    return f"{config['state']}/{shard:05d}.json"


@functools.lru_cache(maxsize=2)
def _load_plan(path, fingerprint):
    plan = _read_json(path)
    if plan["fingerprint"] != fingerprint:
        raise RuntimeError(f"{path} changed while the pipeline ran")
    return plan


@functools.lru_cache(maxsize=2)
def _serializer(class_names):
    from tensorflow_datasets.core import example_serializer
    features = prepare.dataset_features(list(class_names))
    return features, example_serializer.ExampleSerializer(features.get_serialized_info())


def _open_shard(final):
    """(path to write, commit()): a shard appears under its final name only when it is complete."""
    if storage.is_remote(final):
        handle, staging = tempfile.mkstemp(suffix=".array_record")
        os.close(handle)
        return staging, lambda: (storage.upload(staging, final), os.remove(staging))
    staging = f"{final}.tmp-{uuid.uuid4().hex}"
    return staging, lambda: os.replace(staging, final)


def write_shard(shard, plan_path, fingerprint):
    """Decode shard `shard`'s videos with `prepare.encode_video`, write them as one ArrayRecord file, then its
    marker. Runs on a Beam worker; returns the marker."""
    from apache_beam.metrics import Metrics
    from array_record.python import array_record_module

    plan = _load_plan(plan_path, fingerprint)
    config = plan["config"]
    features, serializer = _serializer(tuple(config["class_names"]))
    final = os.fspath(_template(config).sharded_filepath(shard_index=shard, num_shards=len(config["shards"])))
    staging, commit = _open_shard(final)
    writer = array_record_module.ArrayRecordWriter(staging, "group_size:1" if config["zstd"] else prepare.UNCOMPRESSED)
    count, size, bad = 0, 0, []
    try:
        for index in config["shards"][shard]:
            path, label = plan["paths"][index], plan["labels"][index]
            Metrics.counter(NAMESPACE, "videos").inc()
            try:
                frames = prepare.encode_video(path, **config["options"])  # a bucket video is streamed
            except Exception as error:  # one bad video must not stop the conversion; it is reported
                Metrics.counter(NAMESPACE, "bad").inc()
                bad.append({"index": index, "file": path, "reason": cli.describe(error)})
                continue
            encoded = features.encode_example(prepare.example(frames, label, path, config["root"]))
            record = serializer.get_tf_example(encoded).SerializeToString(deterministic=True)
            writer.write(record)
            count, size = count + 1, size + len(record)
    finally:
        writer.close()
    commit()
    marker = {"shard": shard, "num_examples": count, "num_bytes": size, "bad": bad}
    files.write_json(_marker(config, shard), marker, "prepare_beam state file")
    return marker


def _finished(directory, split, data_dir, name):
    """prepare's report of a split already written, or None; refuses a dataset that holds other splits, as
    prepare (TFDS) does."""
    info = storage.join(directory, "dataset_info.json")
    if not storage.exists(info):
        return None
    splits = [s["name"] for s in files.read_json(info, "TFDS dataset info").get("splits", [])]
    if split not in splits:
        raise RuntimeError(f"{directory} already holds a prepared dataset (splits {splits}); prepare writes one "
                           f"split per dataset: choose another --name or --version")
    return _read_json(f"{data_dir}/{name}/{split}.bad_videos.json")


def _run_pipeline(beam, plan_path, fingerprint, pending, pipeline_args, workers):
    """Write the `pending` shards; returns how many videos the workers decoded (None without runner metrics)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    if not pipeline_args:
        pipeline_args = ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers or os.cpu_count()}",
                         "--default_sdk_harness_log_level=WARNING"]
    pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
    _ = (pipeline | "Shards" >> beam.Create(pending)  # Create spreads its elements over the workers (Reshuffle)
         | "DecodeAndWrite" >> beam.Map(write_shard, plan_path=plan_path, fingerprint=fingerprint))
    previous = os.environ.get("PYTHONPATH")  # the DirectRunner's worker processes import this package
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(__file__)), previous]))
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        if previous is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = previous
    try:
        counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE).with_name("videos"))
        return sum(c.committed for c in counters["counters"])
    except Exception:  # noqa: BLE001 - metrics are a report, not the output; some runners do not give them
        return None


def _finalize(config, list_file, short_side, jpeg_quality, data_dir, start):
    """bad_videos.json, then the metadata (TFDS's DatasetInfo, as prepare writes it), from the markers; then
    the markers, the plan and any staging file a killed worker left are removed."""
    from tensorflow_datasets.core import splits
    from tensorflow_datasets.core.dataset_builders import adhoc_builder

    count, name, split = len(config["shards"]), config["name"], config["split"]
    missing = [s for s in range(count) if not storage.exists(_marker(config, s))]
    if missing:
        raise RuntimeError(f"{len(missing)} of {count} shards were not written (e.g. shard {missing[0]}); run again "
                           "to write only those")
    markers = [_read_json(_marker(config, s)) for s in range(count)]
    lengths = [m["num_examples"] for m in markers]
    if not sum(lengths):
        raise RuntimeError(f"no video of {list_file} could be read (e.g. {markers[0]['bad'][:1]})")
    bad = sorted((b for m in markers for b in m["bad"]), key=lambda b: b["index"])
    report = {"videos": sum(lengths), "bad": [{"file": b["file"], "reason": b["reason"]} for b in bad],
              "seconds": time.time() - start}
    files.write_json(f"{data_dir}/{name}/{split}.bad_videos.json", report, "report of unreadable videos")
    builder = adhoc_builder.AdhocBuilder(
        name=name, version=config["version"], features=prepare.dataset_features(config["class_names"]),
        split_datasets={}, data_dir=data_dir, description=prepare.description(list_file, short_side, jpeg_quality),
        file_format="array_record")
    size = sum(m["num_bytes"] for m in markers)
    builder.info.set_splits(splits.SplitDict([splits.SplitInfo(name=split, shard_lengths=lengths, num_bytes=size,
                                                               filename_template=_template(config))]))
    builder.info.write_to_directory(config["directory"])
    storage.remove(config["state"])
    for leftover in storage.listdir(config["directory"]):
        if leftover.startswith(f"{name}-{split}.array_record-") and ".tmp-" in leftover:
            storage.remove(storage.join(config["directory"], leftover))
    return report


def prepare_beam(list_file, root, labels, name, split, data_dir, version="1.0.0", short_side=256, jpeg_quality=90,
                 max_frames=0, zstd=False, videos_per_shard=128, pipeline_args=(), workers=0):
    """Write the dataset with Beam; returns prepare's report plus "decoded" (videos decoded by this run),
    "shards" and "shards_written" (by this run; the others were finished before)."""
    beam = _import_beam()
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError as error:
        raise ImportError(f"prepare_beam writes TFDS datasets and needs TensorFlow Datasets and TensorFlow ({error}): "
                          "pip install -r requirements-tfds.txt") from None
    if videos_per_shard < 1:
        raise ValueError(f"videos_per_shard must be at least 1, got {videos_per_shard}")
    start = time.time()
    class_names = datasets.read_labels(labels)
    parsed = datasets.read_list_file(list_file, root, num_classes=len(class_names))
    directory = f"{data_dir}/{name}/{version}"
    shards = plan_shards(len(parsed.paths), split, videos_per_shard)
    done = _finished(directory, split, data_dir, name)
    if done is not None:
        log.info("%s split %s is already prepared; nothing to do", directory, split)
        return {**done, "seconds": time.time() - start, "decoded": 0, "shards": len(shards), "shards_written": 0}
    config = dict(name=name, split=split, version=version, directory=directory, state=f"{directory}/.{split}.beam",
                  root=root, class_names=class_names, zstd=zstd, shards=shards,
                  options=dict(short_side=short_side, jpeg_quality=jpeg_quality, max_frames=max_frames))
    plan = {"config": config, "paths": list(parsed.paths), "labels": list(parsed.labels)}
    plan["fingerprint"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
    plan_path = f"{config['state']}/plan.json"
    storage.makedirs(config["state"])
    if not storage.exists(plan_path):
        with files.atomic_write(plan_path, "prepare_beam plan") as f:  # compact: it lists every video's path
            f.write(json.dumps(plan, sort_keys=True, separators=(",", ":")))
    elif _read_json(plan_path).get("fingerprint") != plan["fingerprint"]:
        raise RuntimeError(f"{config['state']} holds an unfinished run with another list file or other options; "
                           f"finish it with those, or delete {directory} to start over")
    pending = [s for s in range(len(shards)) if not storage.exists(_marker(config, s))]
    log.info("%d of %d shards to write (%d videos)", len(pending), len(shards), sum(len(shards[s]) for s in pending))
    decoded = _run_pipeline(beam, plan_path, plan["fingerprint"], pending, pipeline_args, workers) if pending else 0
    report = _finalize(config, list_file, short_side, jpeg_quality, data_dir, start)
    return {**report, "decoded": decoded, "shards": len(shards), "shards_written": len(pending)}


def main(argv):
    cli.configure_logging()
    for required in ("list_file", "labels_file", "name", "data_dir"):
        if not getattr(FLAGS, required):
            raise app.UsageError(f"--{required} is required")
    stray = [a for a in argv[1:] if not a.startswith("-")]
    if stray:
        raise app.UsageError(f"unexpected arguments {' '.join(stray)}: Beam options go after `--` and start with --")
    report = prepare_beam(FLAGS.list_file, FLAGS.root, FLAGS.labels_file, FLAGS.name, FLAGS.split, FLAGS.data_dir,
                          FLAGS.version, FLAGS.short_side, FLAGS.jpeg_quality, FLAGS.max_frames, FLAGS.zstd,
                          FLAGS.videos_per_shard, argv[1:], FLAGS.workers)
    print(f"wrote {report['videos']} videos to {FLAGS.data_dir}/{FLAGS.name} split {FLAGS.split} in "
          f"{report['seconds']:.1f} s ({report['shards_written']} of {report['shards']} shards written by this run, "
          f"{report['decoded']} videos decoded); {len(report['bad'])} unreadable (listed in "
          f"{FLAGS.split}.bad_videos.json)")


if __name__ == "__main__":
    # Beam pickles write_shard by reference: run it from the importable module (workers cannot see __main__).
    from data_pipelines import prepare_beam as importable
    importable.define_flags()
    flags.adopt_module_key_flags(prepare)  # --help lists prepare's flags and ours
    flags.adopt_module_key_flags(importable)
    cli.run(importable.main, positional=True)
