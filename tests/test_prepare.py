"""prepare: list-file dataset → TFDS ArrayRecord of JPEG frames, read back by TfdsSource and the pipeline."""
import numpy as np
import pytest

from configs import common
from data_pipelines import datasets, pipeline, prepare, transforms, video
from vifi_jax.runtime import data


def test_prepared_frames_match_decoded_video_and_feed_the_pipeline(synthetic_videos, tmp_path):
    root, list_file, labels_csv = synthetic_videos
    with_missing = tmp_path / "train.txt"
    with_missing.write_text(open(list_file).read() + "train/not_there.mp4 2\n")
    report = prepare.prepare(str(with_missing), root, labels_csv, "synthetic_frames", "train", str(tmp_path / "tfds"),
                             short_side=64, workers=2)
    assert report["videos"] == 12 and len(report["bad"]) == 1 and "not_there.mp4" in report["bad"][0]["file"]
    source = datasets.TfdsSource("synthetic_frames", "train", str(tmp_path / "tfds"))
    assert len(source) == 12 and source.class_names == datasets.read_labels(labels_csv)
    videos = datasets.VideoFileSource.from_list_file(list_file, root)
    stored_order = [videos.paths.index(f"{root}/{source.name(i)}") for i in range(len(source))]
    assert sorted(stored_order) == list(range(12))
    for index in (0, 7):
        stored, label = source.load(index, lambda n: [n - 1, 0, 3])
        original, want = videos.load(stored_order[index], lambda n: [n - 1, 0, 3])
        assert label == want
        expected = transforms.resize_short_side(original, 64)
        assert stored.shape == expected.shape == (3, 64, 85, 3)
        assert np.abs(stored.astype(int) - expected).mean() < 3  # JPEG quality 90
    assert video.count_frames(videos.paths[stored_order[0]]) == len(source._parse(0)[0])
    batch = next(iter(pipeline.train_dataset(source, pipeline.ClipSpec(4, 32), 4, seed=0, process=(0, 1))))
    assert batch["frames"].shape == (4, 1, 4, 32, 32, 3) and batch["valid"].all()
    config = common.base_config()
    config.data.source, config.data.tfds_name = "tfds", "synthetic_frames"
    config.data.tfds_data_dir = str(tmp_path / "tfds")
    config.eval.sets = {"val": common.eval_set("", "", tfds_split="train"), "other": common.eval_set("", "")}
    assert len(data.train_split(config).source) == 12
    with pytest.raises(ValueError, match=r"needs --config.eval.sets.other.tfds_split"):
        data.eval_splits(config)
    del config.eval.sets["other"]
    val = data.eval_splits(config)["val"]
    assert val.description == "tfds:synthetic_frames[train]" and val.class_names == source.class_names


def test_records_are_stored_uncompressed_unless_asked(synthetic_videos, tmp_path):
    """TFDS writes zstd ArrayRecords; prepare rewrites them uncompressed (the same records, cheaper reads)."""
    import glob

    from array_record.python import array_record_module

    root, list_file, labels_csv = synthetic_videos
    stored = {}
    for zstd in (False, True):
        data_dir = str(tmp_path / f"zstd_{zstd}")
        prepare.prepare(list_file, root, labels_csv, "frames", "train", data_dir, short_side=32, workers=1, zstd=zstd)
        (shard,) = glob.glob(f"{data_dir}/frames/1.0.0/frames-train.array_record-*")
        reader = array_record_module.ArrayRecordReader(shard)
        assert ("uncompressed" in reader.writer_options_string()) != zstd
        source = datasets.TfdsSource("frames", "train", data_dir)
        stored[zstd] = [source.load(i, lambda n: list(range(n)))[0] for i in range(len(source))]
    for plain, compressed in zip(stored[False], stored[True]):
        np.testing.assert_array_equal(plain, compressed)


def test_without_tfds_prepare_is_one_line_with_the_install_command(synthetic_videos, tmp_path):
    import os
    import subprocess
    import sys
    root, list_file, labels = synthetic_videos
    script = ("import sys, runpy; sys.modules['tensorflow_datasets'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_module('data_pipelines.prepare', run_name='__main__')")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", script, "prepare", f"--list_file={list_file}", f"--root={root}",
                             f"--labels_file={labels}", "--name=clips", f"--data_dir={tmp_path / 'tfds'}"],
                            cwd=repo, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and "pip install -r requirements-tfds.txt" in lines[0]
    assert not (tmp_path / "tfds").exists()
