"""Video decoding with OpenCV (FFmpeg backend): frame counts and selected frames as RGB uint8.

`read_frames` makes one forward pass over the stream: frames that are not
wanted are grabbed (decoded, never colour-converted or copied), wanted ones are
retrieved once even if asked for repeatedly, and a gap is crossed by a seek when
that skips decoding: always for a long gap, and for a short one when the
keyframes seen so far say the seek would land well past the current frame
(short-GOP files such as VP9 webm). Seeks are verified and abandoned for a
plain forward pass if the backend lands anywhere but the frame asked for.
Only the requested frames are held.

A video file may come from a stranger, so reading one is bounded: only regular files are opened; FFmpeg
may use only the `file` protocol and the demuxers of real video containers (no concat lists, playlists or
image sequences, which would make it open other files); a video in a bucket (gs://) is streamed to
FFmpeg through a Python file object in ranged reads (`storage.open_read`), never copied whole to local
disk, and decodes to the same pixels as the local file; frames larger than `MAX_PIXELS` are refused
before any is decoded; and a read that takes longer than `TIME_LIMIT` seconds ends with an error.
"""
import os
import time

import cv2
import numpy as np

from data_pipelines import files, storage

# FFmpeg options for every capture (OpenCV passes this variable to avformat_open_input).
_DEMUXERS = ("mov,mp4,m4a,3gp,3g2,mj2", "avi", "matroska,webm", "flv", "mpeg", "mpegts", "ogg", "asf", "mxf",
             "h264", "hevc", "m4v", "mjpeg", "rawvideo", "nut", "ivf", "yuv4mpegpipe", "gif")
FFMPEG_OPTIONS = f"protocol_whitelist;file|format_whitelist;{','.join(_DEMUXERS)}"
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_OPTIONS)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg quiet: our VideoErrors say what went wrong
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV's own messages: errors only (its "can't capture by name" warnings say nothing)
MAX_PIXELS = 4096 * 4096  # per frame: 8K UHD (7680 x 4320) fits, an 8192 x 8192 bomb does not
TIME_LIMIT = 120.0  # seconds for one open and read of one video
# What went wrong, as VideoError.kind (counted in reports).
KINDS = ("missing", "empty", "unreadable", "no_frames", "truncated", "not_regular", "too_large", "timeout", "error")

# A gap of at least this many frames is always crossed by seeking (one GOP of typical encoders).
SEEK_THRESHOLD = 250
# OpenCV's FFmpeg seek to frame n restarts decoding at the keyframe at or before n - 16.
_SEEK_BACKOFF = 16
# A shorter gap is crossed by seeking when that skips at least this many frames of decoding.
_MIN_SEEK_SAVING = 4
_KEYFRAME = ord("I")
_decode_threads = 0


def set_decode_threads(count):
    """FFmpeg decoder threads per opened video (0: FFmpeg's default, one per core); 1 in loader workers."""
    global _decode_threads
    _decode_threads = int(count)


class VideoError(RuntimeError):
    """A video that cannot be decoded as asked; names the file and the reason, and its `kind` (KINDS)."""

    def __init__(self, path, reason, kind="error", decoded=None):
        super().__init__(f"{path}: {reason}")
        if kind not in KINDS:
            raise ValueError(f"unknown VideoError kind {kind!r}")
        self.path, self.reason, self.kind = str(path), reason, kind
        self.decoded = decoded  # frames that did decode, when the video ended before a requested frame


def _capture_params(raw=False):
    limit = int(TIME_LIMIT * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, limit, cv2.CAP_PROP_READ_TIMEOUT_MSEC, limit]
    if raw:
        params += [cv2.CAP_PROP_FORMAT, -1]  # raw packets: demux without decoding
    elif _decode_threads:
        params += [cv2.CAP_PROP_N_THREADS, _decode_threads]
    return params


def _check_file(path):
    problem, size = files.regular_file_status(path)
    if problem:
        kind = "missing" if problem.startswith("does not exist") else "not_regular"
        raise VideoError(path, f"file {problem}", kind)
    if size == 0:
        raise VideoError(path, "file is empty", "empty")


class _StreamCapture:
    """A capture that reads a bucket object through a Python stream. OpenCV 5.1's `release()` (and a second
    `open()`) drops the capture's reference to that stream without holding the GIL, which crashes the
    interpreter; deleting the capture drops it with the GIL held. So `release` deletes the capture, and
    the stream, kept alive here until then, is closed after it."""

    def __init__(self, stream, params):
        self._stream, self._capture = stream, cv2.VideoCapture()
        self._capture.open(stream, cv2.CAP_FFMPEG, params)

    def __getattr__(self, name):
        return getattr(self._capture, name)

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self._capture is not None and self._capture.isOpened()

    def release(self):
        if self._capture is not None:
            self._capture = None
            self._stream.close()


def _open(path, params):
    """A new capture of `path`: a local file by name, a bucket object as a stream (a reopen is always a
    new capture: see `_StreamCapture`)."""
    if not storage.is_remote(path):
        return cv2.VideoCapture(os.fspath(path), cv2.CAP_FFMPEG, params)
    try:
        stream = storage.open_read(path)
    except OSError as error:
        raise VideoError(path, getattr(error, "cause", str(error)), "unreadable") from error
    return _StreamCapture(stream, params)


def open_capture(path):
    """An opened FFmpeg capture, or a VideoError naming a missing, empty, unopenable or oversized file."""
    path = os.fspath(path)
    _check_file(path)
    capture = _open(path, _capture_params())
    if not capture.isOpened():
        raise VideoError(path, "OpenCV/FFmpeg cannot open it (corrupt file, unsupported container/codec, or a "
                         "playlist/concat file, which is not read)", "unreadable")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > MAX_PIXELS:
        capture.release()
        raise VideoError(path, f"frames are {width}x{height}, more than the {MAX_PIXELS:,} pixels read per frame",
                         "too_large")
    return capture


class _Deadline:
    """Raises a `timeout` VideoError once a read of `path` has taken longer than TIME_LIMIT seconds."""

    def __init__(self, path):
        self.path, self.end = path, time.monotonic() + TIME_LIMIT

    def check(self):
        if time.monotonic() > self.end:
            raise VideoError(self.path, f"reading took longer than {TIME_LIMIT:.0f} s", "timeout")


def packet_count(path):
    """The number of video packets in the container, found by demuxing without decoding.

    This is `len(decord.VideoReader(path))` as decord 0.6.0 (the loader of the official code) computes it:
    it indexes every packet of the video stream when it opens a file and reports their number. Container
    headers can disagree (a truncated avi keeps its full count; Matroska/WebM store none, and OpenCV then
    rounds duration × fps), so the header is not used.
    """
    _check_file(os.fspath(path))
    capture = _open(os.fspath(path), _capture_params(raw=True))
    deadline = _Deadline(path)
    try:
        count = 0
        while capture.grab():
            count += 1
            if count % 256 == 0:
                deadline.check()
    finally:
        capture.release()
    return count


_COUNTS = {}  # (path, size, mtime) -> packet count, in this process
MAX_CACHED_COUNTS = 100_000  # ~25 MB of keys; then the cache starts afresh


def cached_packet_count(path):
    """`packet_count`, remembered per file (size and modification time included) in this process, so a
    loader worker demuxes each video once rather than once per clip it reads from it."""
    if storage.is_remote(path):
        found = storage.info(path)
        key = (os.fspath(path), found["size"], found["version"])
    else:
        stat = os.stat(path)
        key = (os.fspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _COUNTS:
        if len(_COUNTS) >= MAX_CACHED_COUNTS:
            _COUNTS.clear()
        _COUNTS[key] = packet_count(path)
    return _COUNTS[key]


def count_frames(path):
    """The number of frames that actually decode (container headers can over- or under-count)."""
    capture = open_capture(path)
    deadline = _Deadline(path)
    try:
        count = 0
        while capture.grab():
            count += 1
            deadline.check()
    finally:
        capture.release()
    if count == 0:
        raise VideoError(path, "no frame decodes (corrupt file or unsupported codec)", "no_frames")
    return count


def iter_frames(path, chunk):
    """Every frame that decodes, front to back in one decode, as RGB uint8 arrays of at most `chunk` frames
    (the last may be shorter). Each chunk must decode within TIME_LIMIT seconds."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    capture = open_capture(path)
    try:
        out, filled, total = None, 0, 0
        deadline = _Deadline(path)
        while capture.grab():
            deadline.check()
            frame = capture.retrieve()[1]
            if out is None:
                out = np.empty((chunk, *frame.shape), np.uint8)
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=out[filled])
            filled, total = filled + 1, total + 1
            if filled == chunk:
                yield out.copy()
                filled, deadline = 0, _Deadline(path)
        if total == 0:
            raise VideoError(path, "no frame decodes (corrupt file or unsupported codec)", "no_frames")
        if filled:
            yield out[:filled].copy()
    finally:
        capture.release()


def read_frames(path, indices, seek_threshold=SEEK_THRESHOLD):
    """RGB uint8 frames [len(indices), H, W, 3] in the order asked; indices may repeat or be unsorted."""
    indices = _check_indices(indices)
    holder = [open_capture(path)]
    try:
        return _read(holder, path, indices, seek_threshold)
    finally:
        holder[0].release()


def read_sampled_frames(path, choose_indices, seek_threshold=SEEK_THRESHOLD):
    """Frames at `choose_indices(num_frames)`, `num_frames` counted as decord counts them (`packet_count`).

    If a chosen frame does not decode (a packet that holds no picture, a corrupt tail), the indices are
    chosen again from the number of frames that did decode, where decord would fail on the file.
    """
    holder = [open_capture(path)]
    try:
        num_frames = cached_packet_count(path)
        if num_frames <= 0:
            num_frames = count_frames(path)
        try:
            return _read(holder, path, _check_indices(choose_indices(num_frames)), seek_threshold)
        except VideoError as error:
            if not error.decoded:
                raise
            decoded = error.decoded
        holder[0].release()
        holder[0] = open_capture(path)
        return _read(holder, path, _check_indices(choose_indices(decoded)), seek_threshold)
    finally:
        holder[0].release()


def _check_indices(indices):
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError("read_frames needs at least one frame index")
    if indices.min() < 0:
        raise ValueError(f"frame indices must be >= 0, got {int(indices.min())}")
    return indices


def _read(holder, path, indices, seek_threshold):
    """Each wanted frame is converted to RGB straight into its place in the output (no stacking copy).
    `holder[0]` is the capture; a failed seek replaces it."""
    capture, out, keyframes = holder[0], None, []
    position = 0  # index of the frame the next grab() returns
    deadline = _Deadline(path)
    for target in np.unique(indices):
        if seek_threshold and _seek_pays(position, int(target), keyframes, seek_threshold):
            capture, position = _seek(capture, path, position, int(target))
            holder[0] = capture
        while position <= target:
            deadline.check()
            if not capture.grab():
                if position == 0:
                    raise VideoError(path, "no frame decodes (corrupt file or unsupported codec)", "no_frames")
                raise VideoError(path, f"frame {target} asked for, but the video ends after {position} frames",
                                 "truncated", decoded=position)
            if capture.get(cv2.CAP_PROP_FRAME_TYPE) == _KEYFRAME:
                keyframes.append(position)
            position += 1
        frame = capture.retrieve()[1]
        if out is None:
            out = np.empty((len(indices), *frame.shape), np.uint8)
        places = np.flatnonzero(indices == target)
        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=out[places[0]])
        out[places[1:]] = out[places[0]]
    return out


def _seek_pays(position, target, keyframes, seek_threshold):
    """Whether seeking to `target` decodes fewer frames than grabbing forward from `position`."""
    if target - position >= seek_threshold:
        return True
    if len(keyframes) < 2 or target - position <= _SEEK_BACKOFF + _MIN_SEEK_SAVING:
        return False
    interval = keyframes[-1] - keyframes[-2]  # the stream's keyframe spacing, as last seen
    landing = keyframes[-1] + (target - _SEEK_BACKOFF - keyframes[-1]) // interval * interval
    return landing - position >= _MIN_SEEK_SAVING


def _seek(capture, path, position, target):
    """Seek to `target`; if the backend cannot land exactly there, continue from `position` by grabbing."""
    if capture.set(cv2.CAP_PROP_POS_FRAMES, target) and int(capture.get(cv2.CAP_PROP_POS_FRAMES)) == target:
        return capture, target
    capture.release()
    capture = _open(path, _capture_params())
    if not capture.isOpened():
        raise VideoError(path, "could not be opened again after a seek", "unreadable")
    for _ in range(position):
        capture.grab()
    return capture, position
