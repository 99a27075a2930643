"""Retrieval metrics on hand-worked cases: recalls, ranks, several captions per video, pessimistic ties."""
import numpy as np
import pytest

from vifi_jax import api
from vifi_jax.evaluators import job, retrieval


def test_ranks_recalls_and_median_worked_by_hand():
    # 3 captions x 3 videos; caption i describes video i
    similarity = np.array([[0.9, 0.1, 0.2],    # caption 0: video 0 first              -> rank 1
                           [0.8, 0.3, 0.5],    # caption 1: video 1 after 0.8 and 0.5  -> rank 3
                           [0.1, 0.2, 0.7]])   # caption 2: video 2 first              -> rank 1
    m = retrieval.metrics(similarity, [0, 1, 2])
    assert m["t2v"] == {"R1": pytest.approx(200 / 3), "R5": 100.0, "R10": 100.0, "MdR": 1.0,
                        "MnR": pytest.approx(5 / 3)}
    # video 0: captions score 0.9, 0.8, 0.1 -> caption 0 first; video 1: 0.1, 0.3, 0.2 -> caption 1 first;
    # video 2: 0.2, 0.5, 0.7 -> caption 2 first
    assert m["v2t"]["R1"] == 100.0 and m["v2t"]["MnR"] == 1.0


def test_several_captions_per_video_and_ties_count_against_the_truth():
    similarity = np.array([[0.5, 0.5],   # caption 0 (video 0) ties with video 1: pessimistic rank 2
                           [0.2, 0.6],   # caption 1 (video 1): rank 1
                           [0.4, 0.3]])  # caption 2 (video 1): rank 2
    m = retrieval.metrics(similarity, [0, 1, 1])
    assert m["t2v"]["R1"] == pytest.approx(100 / 3) and m["t2v"]["MnR"] == pytest.approx(5 / 3)
    # v2t, video 0: its caption 0 scores 0.5, caption 2 scores 0.4 -> rank 1; video 1: best of caption 1
    # (0.6, rank 1) and caption 2 (0.3, rank 3) -> 1
    assert m["v2t"] == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "MdR": 1.0, "MnR": 1.0}
    with pytest.raises(ValueError, match="one video index per caption"):
        retrieval.metrics(similarity, [0, 1])
    with pytest.raises(ValueError, match="indices must be in 0..1"):
        retrieval.metrics(similarity, [0, 1, 2])


def test_the_retrieval_job_on_generated_clips_and_on_caption_files(tmp_path, synthetic_videos):
    import csv
    import json
    import os
    import shutil

    from configs import retrieval as retrieval_config
    from data_pipelines import datasets
    results = job.run(retrieval_config.get_config("smoke"), str(tmp_path / "smoke"))
    found = results["final"]["retrieval"]
    assert found["videos"] == found["captions"] == 8 and found["unreadable"] == []
    # The same numbers another way: the model's own encoders on each clip's test view and each caption, and
    # the ranks counted here (caption i describes video i).
    config = retrieval_config.get_config("smoke")
    model = api.from_config(config.model, seed=config.seed)[0]
    pairs = retrieval.caption_pairs(config)
    videos = np.concatenate([np.asarray(model.encode_video(api.load_video(video, config.data.num_frames,
                                                                          config.data.input_size)))
                             for video, _ in pairs])
    texts = np.asarray(model.encode_text([caption for _, caption in pairs]))
    similarity = texts @ videos.T
    ranks = np.array([1 + np.sum(np.delete(similarity[i], i) >= similarity[i, i]) for i in range(8)])
    for name, want in (("R1", 100 * np.mean(ranks <= 1)), ("R5", 100 * np.mean(ranks <= 5)),
                       ("R10", 100 * np.mean(ranks <= 10)), ("MdR", np.median(ranks)), ("MnR", np.mean(ranks))):
        assert found["t2v"][name] == pytest.approx(want), name
    video_ranks = np.array([1 + np.sum(np.delete(similarity[:, j], j) >= similarity[j, j]) for j in range(8)])
    assert found["v2t"]["MnR"] == pytest.approx(np.mean(video_ranks))
    assert json.load(open(tmp_path / "smoke" / "results.json"))["final"]["retrieval"]["t2v"] == found["t2v"]
    root, list_file, labels = synthetic_videos
    paths = datasets.read_list_file(list_file, root).paths[:3]
    os.makedirs(tmp_path / "videos")
    for i, path in enumerate(paths):
        shutil.copy(path, tmp_path / "videos" / f"video{i}.mp4")
    with open(tmp_path / "msrvtt.csv", "w", newline="") as f:  # MSR-VTT 1k-A's layout
        writer = csv.writer(f)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        writer.writerows([[f"ret{i}", f"msr{i}", f"video{i}", f"a clip number {i}"] for i in range(3)])
        writer.writerow(["ret9", "msr9", "video9", "a clip that is missing"])
        writer.writerow(["ret10", "msr0", "video0", " ".join(["a very long caption"] * 40)])  # cut to the context
    config = retrieval_config.get_config("smoke")
    config.data.source, config.data.root = "files", str(tmp_path / "videos")
    config.retrieval.captions = str(tmp_path / "msrvtt.csv")
    found = job.run(config, str(tmp_path / "csv"))["final"]["retrieval"]
    assert found["videos"] == 4 and found["captions"] == 5
    assert [v["file"].endswith("video9.mp4") for v in found["unreadable"]] == [True]
    assert found["t2v"]["R1"] <= 80.0 and found["t2v"]["MnR"] >= 1 + 3 / 5  # its caption ranks it last (4th)
    (tmp_path / "bad.csv").write_text("id,text\\n1,x\\n")
    config.retrieval.captions = str(tmp_path / "bad.csv")
    with pytest.raises(datasets.DatasetError, match="expected columns video_id and caption"):
        job.run(config, str(tmp_path / "bad"))


def test_caption_files_of_the_wrong_shape_and_unreadable_videos_are_errors(tmp_path, synthetic_videos):
    """Each is one error naming the file and the item, never a TypeError, a hang or R@5 = 100 of nothing."""
    import json
    import os

    from configs import retrieval as retrieval_config
    from data_pipelines import datasets, files
    from vifi_jax.evaluators import scoring
    root, list_file, _ = synthetic_videos
    config = retrieval_config.get_config("smoke")
    config.data.source, config.data.root = "files", root
    for name, content, expect in (("dict.json", {"video": "a", "caption": "b"}, "must hold a JSON list"),
                                  ("strings.json", ["a clip"], r"item 0: expected an object .* got a clip"),
                                  ("no_caption.json", [{"video": "a", "text": "b"}], "item 0: expected an object"),
                                  ("up.json", [{"video": "../../etc/passwd", "caption": "x"}], "leads outside")):
        (tmp_path / name).write_text(json.dumps(content))
        config.retrieval.captions = str(tmp_path / name)
        with pytest.raises((datasets.DatasetError, files.OutsideError), match=expect):
            retrieval.caption_pairs(config)
    (tmp_path / "short.csv").write_text("video_id,caption\nclass0/clip0\n")
    config.retrieval.captions = str(tmp_path / "short.csv")
    with pytest.raises(datasets.DatasetError, match=r"short.csv:2: a row without a video_id or caption"):
        retrieval.caption_pairs(config)
    os.mkfifo(tmp_path / "fifo.csv")
    config.retrieval.captions = str(tmp_path / "fifo.csv")
    with pytest.raises(datasets.DatasetError, match="fifo.csv is a FIFO"):  # refused at once, never blocks
        retrieval.caption_pairs(config)
    (tmp_path / "missing.json").write_text(json.dumps([{"video": f"gone{i}", "caption": "x"} for i in range(3)]))
    config.retrieval.captions = str(tmp_path / "missing.json")
    with pytest.raises(scoring.NothingReadError, match="none of the 3 videos could be read, e.g. .*gone0"):
        job.run(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "results.json")
