"""prepare_beam: the Beam pipeline (DirectRunner, 2 worker processes) writes what prepare writes, and a rerun
after a crash (1 worker: one shard is left) decodes only the shard that was not finished."""
import glob
import json
import os
import subprocess
import sys

import pytest

from data_pipelines import datasets, files, prepare, prepare_beam

PIPELINE = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
ONE_SHARD_PIPELINE = ["--direct_running_mode=multi_processing", "--direct_num_workers=1"]  # a second worker idles
NAME, SPLIT, LOST = "clips", "train", 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.xdist_group("beam")  # one worker runs the pipelines once (--dist loadgroup)


def _inputs(synthetic_videos, work):
    """The 12 synthetic clips (linked into a new root), a truncated copy of one and a missing file."""
    root, list_file, labels = synthetic_videos
    videos = work / "videos"
    (videos / "train").mkdir(parents=True)
    lines = [line for line in open(list_file).read().splitlines() if line.strip()]
    for line in lines:
        relative = line.rsplit(maxsplit=1)[0]
        os.symlink(os.path.join(root, relative), videos / relative)
    whole = (videos / lines[0].split()[0]).read_bytes()
    (videos / "train" / "truncated.mp4").write_bytes(whole[:len(whole) // 2])
    listing = work / "list.txt"
    listing.write_text("\n".join(lines + ["train/truncated.mp4 1", "train/missing.mp4 2"]) + "\n")
    return str(listing), str(videos), labels


def _shards(data_dir):
    return sorted(glob.glob(f"{data_dir}/{NAME}/1.0.0/{NAME}-{SPLIT}.array_record-*"))


def _records(data_dir):
    from array_record.python import array_record_module
    records = []
    for shard in _shards(data_dir):
        reader = array_record_module.ArrayRecordReader(shard)
        assert "uncompressed" in reader.writer_options_string()
        records += [reader.read([i])[0] for i in range(reader.num_records())]
        reader.close()
    return records


def _stat(path):
    status = os.stat(path)
    return status.st_ino, status.st_mtime_ns


@pytest.fixture(scope="module")
def runs(synthetic_videos, tmp_path_factory):
    """prepare, then prepare_beam crashing after every shard is written (its bad-video list cannot be written),
    one shard's marker lost and a killed writer's staging file left; then a rerun through the command line
    and a rerun of the finished split."""
    work = tmp_path_factory.mktemp("prepare_beam")
    listing, root, labels = _inputs(synthetic_videos, work)
    local_dir, beam_dir = str(work / "local"), str(work / "beam")
    local = prepare.prepare(listing, root, labels, NAME, SPLIT, local_dir, short_side=32, workers=2)
    arguments = (listing, root, labels, NAME, SPLIT, beam_dir)
    obstacle = work / "beam" / NAME / f"{SPLIT}.bad_videos.json"
    obstacle.mkdir(parents=True)
    with pytest.raises(files.WriteError):
        prepare_beam.prepare_beam(*arguments, short_side=32, videos_per_shard=4, pipeline_args=PIPELINE)
    obstacle.rmdir()
    state = f"{beam_dir}/{NAME}/1.0.0/.{SPLIT}.beam"
    plan = json.load(open(f"{state}/plan.json"))
    crashed = {"markers": sorted(os.listdir(state)), "stats": [_stat(s) for s in _shards(beam_dir)]}
    os.remove(f"{state}/{LOST:05d}.json")
    staging = f"{_shards(beam_dir)[LOST]}.tmp-killed"
    open(staging, "wb").write(b"half a shard")
    command = [sys.executable, "-m", "data_pipelines.prepare_beam", f"--list_file={listing}", f"--root={root}",
               f"--labels_file={labels}", f"--name={NAME}", f"--split={SPLIT}", f"--data_dir={beam_dir}",
               "--short_side=32", "--videos_per_shard=4", "--", *ONE_SHARD_PIPELINE]
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    after = [_stat(s) for s in _shards(beam_dir)]
    again = prepare_beam.prepare_beam(*arguments, short_side=32, videos_per_shard=4, pipeline_args=PIPELINE)
    return dict(local=local, local_dir=local_dir, beam_dir=beam_dir, plan=plan, crashed=crashed, rerun=rerun,
                after=after, again=again, state=state, staging=staging, videos=root)


def test_beam_writes_the_records_metadata_and_bad_list_of_prepare(runs):
    from tensorflow_datasets.proto import tf_example_pb2

    local, beam = _records(runs["local_dir"]), _records(runs["beam_dir"])
    assert len(local) == len(beam) == 12 and len(_shards(runs["beam_dir"])) == 4
    for mine, theirs in zip(beam, local):  # record for record, in order
        a, b = (tf_example_pb2.Example.FromString(r).features.feature for r in (mine, theirs))
        assert list(a["video"].bytes_list.value) == list(b["video"].bytes_list.value)  # the same JPEG bytes
        assert a["label"].int64_list.value == b["label"].int64_list.value
        assert a["path"].bytes_list.value == b["path"].bytes_list.value
        assert tf_example_pb2.Example.FromString(mine) == tf_example_pb2.Example.FromString(theirs)
        assert len(mine) == len(theirs)
    assert len(set(beam)) == 12
    meta = {d: f"{runs[d]}/{NAME}/1.0.0" for d in ("local_dir", "beam_dir")}
    for name in ("features.json", "label.labels.txt"):
        assert open(f"{meta['local_dir']}/{name}").read() == open(f"{meta['beam_dir']}/{name}").read()
    info = {d: json.load(open(f"{meta[d]}/dataset_info.json")) for d in meta}
    lengths = {d: [int(n) for n in info[d]["splits"][0].pop("shardLengths")] for d in meta}
    assert info["local_dir"] == info["beam_dir"]  # description, splits' numBytes, file format, version ...
    assert lengths["local_dir"] == [12] and sum(lengths["beam_dir"]) == 12
    bad = {d: json.load(open(f"{runs[d]}/{NAME}/{SPLIT}.bad_videos.json")) for d in meta}
    assert [b["file"] for b in bad["beam_dir"]["bad"]] == [f"{runs['videos']}/train/{n}" for n in
                                                           ("truncated.mp4", "missing.mp4")]
    assert bad["local_dir"]["bad"] == bad["beam_dir"]["bad"] and bad["local_dir"]["videos"] == 12
    sources = [datasets.TfdsSource(NAME, SPLIT, runs[d]) for d in meta]
    assert [s.name(i) for s in sources for i in range(12)] == [sources[0].name(i) for i in range(12)] * 2
    assert sources[0].class_names == sources[1].class_names


def test_a_rerun_decodes_only_the_unfinished_shard_and_a_finished_split_nothing(runs):
    crashed, rerun, plan = runs["crashed"], runs["rerun"], runs["plan"]
    assert crashed["markers"] == ["00000.json", "00001.json", "00002.json", "00003.json", "plan.json"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    lost_videos = len(plan["config"]["shards"][LOST])
    assert f"(1 of 4 shards written by this run, {lost_videos} videos decoded)" in rerun.stdout, rerun.stdout
    for shard, (before, after) in enumerate(zip(crashed["stats"], runs["after"])):
        assert (before == after) == (shard != LOST), shard  # finished shards untouched, the lost one rewritten
    assert not os.path.exists(runs["staging"]) and not os.path.exists(runs["state"])
    again = runs["again"]
    assert again["decoded"] == 0 and again["shards_written"] == 0 and again["videos"] == 12
    assert [_stat(s) for s in _shards(runs["beam_dir"])] == runs["after"]


def test_without_beam_it_is_one_line_with_the_install_command(synthetic_videos, tmp_path):
    root, list_file, labels = synthetic_videos
    script = ("import sys, runpy; sys.modules['apache_beam'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_module('data_pipelines.prepare_beam', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", script, "prepare_beam", f"--list_file={list_file}",
                             f"--root={root}", f"--labels_file={labels}", "--name=clips",
                             f"--data_dir={tmp_path / 'tfds'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and "pip install -r requirements-beam.txt" in lines[0]
    assert not (tmp_path / "tfds").exists()
