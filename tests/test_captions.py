"""Caption files in the layouts their users have (CLIP4Clip's MSR-VTT files, a plain JSON/CSV), and the
captioned source: one caption per video drawn per epoch, deterministically, or every caption a sample."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

from configs import retrieval as retrieval_config
from data_pipelines import captions, datasets, pipeline
from vifi_jax.runtime import data


def write_msrvtt(directory, video_ids, captions_of):
    """MSR-VTT as CLIP4Clip ships it: MSRVTT_data.json ({"info", "videos", "sentences"}), the training
    lists MSRVTT_train.9k.csv / .7k.csv (one video_id column) and MSRVTT_JSFUSION_test.csv."""
    videos = [{"category": i % 20, "url": f"https://www.youtube.com/watch?v=x{i}", "video_id": v, "start time": 1.5,
               "end time": 11.5, "split": "train", "id": i} for i, v in enumerate(video_ids)]
    sentences, sen_id = [], 0
    for v in reversed(video_ids):  # the release interleaves videos; order within a video is kept
        for caption in captions_of[v]:
            sentences.append({"caption": caption, "video_id": v, "sen_id": sen_id})
            sen_id += 1
    with open(os.path.join(directory, "MSRVTT_data.json"), "w") as f:
        json.dump({"info": {"contributor": "Microsoft", "year": 2016}, "videos": videos, "sentences": sentences}, f)
    for name, ids in (("MSRVTT_train.9k.csv", video_ids), ("MSRVTT_train.7k.csv", video_ids[:2])):
        with open(os.path.join(directory, name), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["video_id"])
            writer.writerows([v] for v in ids)
    with open(os.path.join(directory, "MSRVTT_JSFUSION_test.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        writer.writerows([f"ret{i}", f"msr{i}", v, captions_of[v][0]] for i, v in enumerate(video_ids))


CAPTIONS = {"video0": ["a man is cooking", "someone cooks pasta"], "video1": ["a dog runs"],
            "video2": ["cars race on a track", "a race", "people watch cars"]}


def test_msrvtt_training_files_give_each_listed_video_its_captions(tmp_path):
    write_msrvtt(tmp_path, list(CAPTIONS), CAPTIONS)
    grouped = captions.read_msrvtt(tmp_path / "MSRVTT_data.json", str(tmp_path / "MSRVTT_train.9k.csv"))
    assert grouped == list(CAPTIONS.items())
    assert captions.read_msrvtt(tmp_path / "MSRVTT_data.json", str(tmp_path / "MSRVTT_train.7k.csv")) == \
        list(CAPTIONS.items())[:2]
    with open(tmp_path / "more.csv", "w") as f:
        f.write("video_id\nvideo0\nvideo77\n")
    with pytest.raises(datasets.DatasetError, match="1 videos of .*more.csv have no caption .* e.g. video77"):
        captions.read_msrvtt(tmp_path / "MSRVTT_data.json", str(tmp_path / "more.csv"))
    with pytest.raises(datasets.DatasetError, match="MSR-VTT data file .*train_videos=MSRVTT_train.9k.csv"):
        captions.read_pairs(str(tmp_path / "MSRVTT_data.json"))
    test = captions.read_pairs(str(tmp_path / "MSRVTT_JSFUSION_test.csv"))
    assert test == [(v, c[0]) for v, c in CAPTIONS.items()]


def test_one_caption_per_video_is_drawn_per_epoch_the_same_way_every_time(tmp_path):
    source = captions.CaptionedVideoSource(["a.mp4", "b.mp4", "c.mp4"], list(CAPTIONS.values()))
    assert len(source) == 3 and source.captions[3] == "cars race on a track"
    draws = [[source.draw_label(v, None, np.random.default_rng([7, position])) for position in range(300)]
             for v in range(3)]
    assert [sorted(set(d)) for d in draws] == [[0, 1], [2], [3, 4, 5]]  # each video's own captions, all drawn
    again = [[source.draw_label(v, None, np.random.default_rng([7, position])) for position in range(300)]
             for v in range(3)]
    assert draws == again  # a function of (seed, position): the same after a resume
    every = captions.CaptionedVideoSource(["a.mp4", "b.mp4", "c.mp4"], list(CAPTIONS.values()), every_caption=True)
    assert len(every) == 6 and [every.name(i) for i in range(6)] == ["a.mp4"] * 2 + ["b.mp4"] + ["c.mp4"] * 3
    assert every.draw_label(4, 4, np.random.default_rng(0)) == 4
    with pytest.raises(datasets.DatasetError, match="1 videos have no caption, e.g. b.mp4"):
        captions.CaptionedVideoSource(["a.mp4", "b.mp4"], [["x"], []])


def test_training_splits_from_msrvtt_files_and_from_a_plain_captions_file(tmp_path, synthetic_videos):
    root, list_file, _ = synthetic_videos
    os.makedirs(tmp_path / "videos")
    for i, path in enumerate(datasets.read_list_file(list_file, root).paths[:3]):
        shutil.copy(path, tmp_path / "videos" / f"video{i}.mp4")
    write_msrvtt(tmp_path, list(CAPTIONS), CAPTIONS)
    config = retrieval_config.get_config("train,smoke")
    config.data.source, config.data.root, config.data.splits_dir = "files", str(tmp_path / "videos"), str(tmp_path)
    config.retrieval.train_captions, config.retrieval.train_videos = "MSRVTT_data.json", "MSRVTT_train.9k.csv"
    split = data.captioned_train_split(config)
    assert split.source.paths == [str(tmp_path / "videos" / f"video{i}.mp4") for i in range(3)]
    assert split.class_names == [c for cs in CAPTIONS.values() for c in cs]
    # Through the loader: the test view (no augmentation), the drawn caption as the label.
    spec = data.clip_spec(config, True)
    assert spec.train and not spec.augment and spec.augment_on == "host"
    element = pipeline.LoadClip(split.source, spec, seed=3).map((5, 2))
    assert element["frames"].shape == (1, config.data.num_frames, 32, 32, 3) and element["label"] in (3, 4, 5)
    assert pipeline.LoadClip(split.source, spec, seed=3).map((5, 2))["label"] == element["label"]
    with open(tmp_path / "own.json", "w") as f:
        json.dump([{"video": "video1", "caption": "first"}, {"video": "video0", "caption": "second"},
                   {"video": "video1", "caption": "third"}], f)
    config.retrieval.train_captions, config.retrieval.train_videos = "own.json", ""
    config.retrieval.every_caption = True
    split = data.captioned_train_split(config)
    assert [os.path.basename(p) for p in split.source.paths] == ["video1.mp4", "video0.mp4"]
    assert split.class_names == ["first", "third", "second"] and len(split.source) == 3
    config.retrieval.train_captions = ""
    with pytest.raises(ValueError, match="retrieval training needs --config.retrieval.train_captions"):
        data.captioned_train_split(config)
