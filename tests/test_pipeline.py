"""Grain pipeline: determinism, sharding, restore-and-continue, evaluation padding, bad videos."""
import json
import os

import grain
import numpy as np
import pytest

from data_pipelines import datasets, pipeline

SPEC = pipeline.ClipSpec(num_frames=4, size=32)


@pytest.fixture(scope="module")
def source(synthetic_videos):
    root, list_file, _ = synthetic_videos
    return datasets.VideoFileSource.from_list_file(list_file, root, num_classes=4)


def take(it, n):
    return [next(it) for _ in range(n)]


def test_batches_are_deterministic_for_a_seed(source):
    a = take(pipeline.iterator(pipeline.train_dataset(source, SPEC, 4, seed=1, process=(0, 1))), 3)
    b = take(pipeline.iterator(pipeline.train_dataset(source, SPEC, 4, seed=1, process=(0, 1))), 3)
    c = take(pipeline.iterator(pipeline.train_dataset(source, SPEC, 4, seed=2, process=(0, 1))), 3)
    assert a[0]["frames"].shape == (4, 1, 4, 32, 32, 3) and a[0]["frames"].dtype == np.uint8
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["frames"], y["frames"])
        np.testing.assert_array_equal(x["index"], y["index"])
    assert any((x["index"] != z["index"]).any() for x, z in zip(a, c))
    labels = np.concatenate([x["label"] for x in a])
    np.testing.assert_array_equal(labels, np.concatenate([x["index"] for x in a]) // 3)  # 3 videos per class


def test_each_epoch_is_a_new_permutation_sharded_disjointly(source):
    epochs = {}
    for process in range(2):
        ds = pipeline.train_dataset(source, SPEC, 6, seed=0, num_epochs=2, process=(process, 2))
        assert len(ds) == 4  # 12 videos / global batch 6 = 2 batches of 3 per process, for 2 epochs
        batches = [b["index"] for b in ds]
        epochs[process] = [np.concatenate(batches[:2]), np.concatenate(batches[2:])]
    for epoch in range(2):
        together = np.concatenate([epochs[0][epoch], epochs[1][epoch]])
        assert sorted(together.tolist()) == list(range(12))
    assert epochs[0][0].tolist() != epochs[0][1].tolist()


@pytest.mark.parametrize("size", [348, 347, 352, 353, 40, 31])
def test_iterations_and_padding_match_the_official_distributed_loader(size):
    """8 ranks of DistributedSampler + DataLoader(batch 4, drop_last): the iterations per epoch, and how many
    videos an epoch reads twice (the sampler's cyclic padding), equal ours."""
    import collections

    import torch
    loaders = [torch.utils.data.DataLoader(range(size), batch_size=4, drop_last=True, sampler=torch.utils.data.
               DistributedSampler(range(size), num_replicas=8, rank=rank, shuffle=True, seed=3)) for rank in range(8)]
    iterations = pipeline.iterations_per_epoch(size, 32, reference_world_size=8)
    assert {len(loader) for loader in loaders} == {iterations}
    official = collections.Counter(int(i) for loader in loaders for batch in loader for i in batch)
    order = pipeline.EpochOrder(size, iterations * 32, seed=3)
    ours = collections.Counter(order(position) for position in range(iterations * 32))
    assert sorted(ours.values()) == sorted(official.values())
    if size == 348:  # SSv2 2-shot: 11 iterations where N // 32 gives 10
        assert iterations == 11 and size // 32 == 10


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_resumed_dataset_continues_exactly(source, num_workers):
    uninterrupted = take(pipeline.iterator(pipeline.train_dataset(source, SPEC, 2, seed=5, num_epochs=3,
                                                                  process=(0, 1)), num_workers), 8)
    resumed = pipeline.iterator(pipeline.train_dataset(source, SPEC, 2, seed=5, num_epochs=3, process=(0, 1),
                                                       start_batch=5), num_workers)
    for want, got in zip(uninterrupted[5:], take(resumed, 3)):
        np.testing.assert_array_equal(want["index"], got["index"])
        np.testing.assert_array_equal(want["frames"], got["frames"])
    pipeline.close(resumed)


def test_processes_together_read_the_one_process_batches(source):
    """Process blocks concatenated in process order are the one-process batch, clip for clip (the same
    videos, frames and augmentation), for 2 and 4 processes, also when resumed mid-run."""
    one = take(iter(pipeline.train_dataset(source, SPEC, 4, seed=7, num_epochs=2, process=(0, 1))), 6)
    for count in (2, 4):
        shards = [take(iter(pipeline.train_dataset(source, SPEC, 4, seed=7, num_epochs=2, process=(p, count),
                                                   start_batch=1)), 5) for p in range(count)]
        for want, parts in zip(one[1:], zip(*shards)):
            for key in ("index", "label", "frames"):
                np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]), want[key])


def test_evaluation_pads_only_to_the_device_count_and_counts_every_video_once(source):
    spec = pipeline.ClipSpec(num_frames=4, size=32, train=False, num_clips=2, num_crops=3)
    for processes, devices, sizes in ((2, 2, [5, 1]), (2, 8, [5, 3]), (1, 1, [5, 5, 2])):
        seen, padding = [], 0
        for process in range(processes):
            batches = list(pipeline.eval_dataset(source, spec, 5, process=(process, processes), multiple=devices))
            # 12 videos: global batches of 5 x P; the last one holds what is left, padded to the device count
            assert [len(b["index"]) for b in batches] == sizes
            assert batches[0]["frames"].shape == (5, 6, 4, 32, 32, 3)
            for b in batches:
                seen += b["index"][b["valid"]].tolist()
                padding += int((~b["valid"]).sum())
                assert (b["index"][~b["valid"]] >= 12).all()
        assert sorted(seen) == list(range(12)) and padding == -(-12 // devices) * devices - 12
    single = next(iter(pipeline.eval_dataset(source, pipeline.ClipSpec(4, 32, train=False), 2, process=(0, 1))))
    assert single["frames"].shape == (2, 1, 4, 32, 32, 3) and single["frames"].dtype == np.uint8


def test_bad_videos_are_replaced_reported_and_limited(synthetic_videos, tmp_path):
    root, list_file, _ = synthetic_videos
    paths, labels = list(datasets.read_list_file(list_file, root).paths), list(range(12))
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.avi").write_bytes(os.urandom(2048))
    paths[:3] = [str(tmp_path / "missing.mp4"), str(tmp_path / "empty.mp4"), str(tmp_path / "junk.avi")]
    source = datasets.VideoFileSource(paths, [l // 3 for l in labels])
    ds = pipeline.train_dataset(source, SPEC, 4, seed=0, num_epochs=1, process=(0, 1))
    bad = pipeline.BadSamples(source, max_fraction=0.5)
    for batch in ds:
        assert batch["valid"].all() and (batch["index"] >= 0).all()
        bad.update(batch)
    summary = bad.summary()
    assert summary["count"] == 3 and summary["by_reason"] == {"missing": 1, "empty": 1, "unreadable": 1}
    assert [v["file"] for v in summary["videos"]] == paths[:3]
    bad.write(str(tmp_path / "run" / "bad_videos.json"))
    assert json.load(open(tmp_path / "run" / "bad_videos.json"))["count"] == 3
    strict = pipeline.BadSamples(source, max_fraction=0.01)
    with pytest.raises(pipeline.TooManyBadSamples, match=r"[123] of 12 videos .* than the allowed 1.0%.*Examples: .*\((missing|empty|unreadable)\)"):
        for batch in ds:
            strict.update(batch)
    evaluated = list(pipeline.eval_dataset(source, pipeline.ClipSpec(4, 32, train=False), 4, process=(0, 1)))
    valid = np.concatenate([b["valid"] for b in evaluated])
    assert valid.tolist() == [False] * 3 + [True] * 9  # unreadable videos are excluded, never replaced


def test_hostile_videos_are_replaced_and_reported_by_kind_without_hanging(tmp_path, synthetic_videos):
    """A concat list pointing at a FIFO, a playlist, a FIFO, a directory and 8192x8192 frames: each is a bad
    sample of its own kind, in training (replaced) and in evaluation (excluded), and nothing blocks."""
    import cv2
    root, list_file, _ = synthetic_videos
    os.mkfifo(tmp_path / "fifo.mp4")
    (tmp_path / "concat.mp4").write_text(f"ffconcat version 1.0\nfile {tmp_path / 'fifo.mp4'}\n")
    (tmp_path / "list.m3u8").write_text(f"#EXTM3U\n#EXTINF:1,\n{tmp_path / 'concat.mp4'}\n")
    writer = cv2.VideoWriter(str(tmp_path / "huge.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 1, (8192, 8192))
    writer.write(np.zeros((8192, 8192, 3), np.uint8))
    writer.release()
    (tmp_path / "folder.mp4").mkdir()
    good = datasets.VideoFileSource.from_list_file(list_file, root, num_classes=4)
    hostile = ["concat.mp4", "list.m3u8", "fifo.mp4", "huge.avi", "folder.mp4"]
    source = datasets.VideoFileSource(good.paths[:3] + [str(tmp_path / n) for n in hostile], [0, 1, 2] + [0] * 5)
    ds = pipeline.eval_dataset(source, pipeline.ClipSpec(num_frames=2, size=32, train=False), 8, process=(0, 1))
    batch = next(iter(ds))
    assert batch["valid"].tolist() == [True] * 3 + [False] * 5
    kinds = [pipeline.REASONS[r] for r in batch["bad_reason"][3:, 0]]
    assert kinds == ["unreadable", "unreadable", "not_regular", "too_large", "not_regular"]
    spec = pipeline.ClipSpec(num_frames=2, size=32)
    report = pipeline.BadSamples(source, max_fraction=1.0)
    for batch in take(pipeline.iterator(pipeline.train_dataset(source, spec, 8, seed=0, num_epochs=2, process=(0, 1))), 2):
        assert (batch["index"] >= 0).all()
        report.update(batch)
    assert set(report.summary()["by_reason"]) <= {"unreadable", "not_regular", "too_large"}


def test_epoch_order_is_grains_permutation_of_each_epoch():
    order = pipeline.EpochOrder(7, 8, seed=3)  # an epoch of 8 positions pads 7 videos cyclically
    shuffled = grain.MapDataset.range(7).seed(3).shuffle()
    for position in [0, 5, 7, 8, 15, 3, 30, 16]:  # epochs visited out of order, and revisited
        epoch, offset = divmod(position, 8)
        assert order(position) == shuffled[epoch * 7 + offset % 7]


def test_auto_workers_share_the_usable_cores_and_only_their_batches_wait_for_a_collection(monkeypatch, source):
    for name in pipeline.LOCAL_PROCESS_COUNT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert pipeline.auto_workers() == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert pipeline.auto_workers() == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert pipeline.auto_workers() == 1
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    collections = []
    monkeypatch.setattr(pipeline.gc, "collect", lambda: collections.append(1))
    batches = pipeline.iterator(pipeline.train_dataset(source, pipeline.ClipSpec(4, 32), 4, seed=0, process=(0, 1)), -1)
    try:  # one worker process on two cores
        assert next(batches)["frames"].shape == (4, 1, 4, 32, 32, 3)
    finally:
        pipeline.close(batches)
    assert collections == [1]  # its batches came in shared memory: collected, as the worker's segments need
    threads = pipeline.iterator(pipeline.train_dataset(source, pipeline.ClipSpec(4, 32), 4, seed=0, process=(0, 1)))
    next(threads)
    pipeline.close(threads)
    assert collections == [1]  # threads' batches are plain arrays: no full collection (0.15-1 s) per evaluation
