"""Where videos come from: ViFi-CLIP list files + label CSVs, and TFDS datasets (ArrayRecord).

A source is random access and picklable, so Grain can shuffle and shard its indices and worker
processes can read from it: `len(source)`, `source.name(i)` (for error reports) and
`source.load(i, choose_indices) -> (frames, label)` with the RGB uint8 frames at the indices
`choose_indices(num_frames)` picks, decoding only what is needed.
"""
import csv
import dataclasses
import io
import logging
import os
import re

import cv2
import numpy as np

from data_pipelines import files, storage, video

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A list file, label file or dataset that cannot be used as given; the message says how to fix it."""


MAX_TEXT_FILE_BYTES = 256 << 20


def read_text(path, what):
    """A UTF-8 text file (a leading BOM dropped), or a DatasetError naming the file and the problem."""
    problem = files.regular_file_problem(path)
    if problem:
        raise DatasetError(f"{what} {path} {problem}")
    with files.open_regular(path, what) as f:
        raw = f.read(MAX_TEXT_FILE_BYTES + 1)
    if len(raw) > MAX_TEXT_FILE_BYTES:
        raise DatasetError(f"{what} {path} is larger than {MAX_TEXT_FILE_BYTES >> 20} MiB")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte {raw[error.start]:#04x}); save it as UTF-8") from error


def read_labels(path):
    """Class names from a ViFi-CLIP label CSV (`id,name` header, quoted names allowed); row order is class order."""
    rows = list(csv.reader(io.StringIO(read_text(path, "label file"), newline="")))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["id", "name"]:
        raise DatasetError(f"{path}: the first line must be the header 'id,name', got {rows[:1]}")
    names, seen = [], {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise DatasetError(f"{path}:{line}: expected 'id,name' (quote names that contain commas), got {row}")
        if row[0].strip() != str(len(names)):
            raise DatasetError(f"{path}:{line}: ids must count up from 0 in row order; expected {len(names)}, "
                               f"got {row[0]!r}")
        name = row[1].strip()
        if not name:
            raise DatasetError(f"{path}:{line}: class {len(names)} has a blank name")
        if name in seen:
            raise DatasetError(f"{path}:{line}: class name {name!r} repeats class {seen[name]} (line "
                               f"{seen[name] + 2}); class names must be distinct")
        seen[name] = len(names)
        names.append(name)
    if not names:
        raise DatasetError(f"{path}: no classes listed")
    return names


@dataclasses.dataclass(frozen=True)
class ListFile:
    """What a list file holds: absolute video paths and integer labels."""
    paths: tuple
    labels: tuple


def read_list_file(path, root="", num_classes=None, check_files=False):
    """Parse `relative/path label` lines (the official datasets_splits/ format), paths joined to `root`.

    With a `root`, an entry must stay under it: an absolute path or a `..` that leaves it is an error naming
    the line (links inside the tree may point anywhere). With an empty root, entries are used as written.

    Labels are checked against `num_classes`. With `check_files`, every file is stat-ed up front (fast:
    no decoding) and missing or empty ones are logged, so a run knows them before it starts; they are
    also handled as bad samples during the run.
    """
    if files.regular_file_problem(path) == "does not exist":
        raise DatasetError(f"list file {path} does not exist (expected lines '<relative path> <label>')")
    paths, labels = [], []
    for line_number, line in enumerate(read_text(path, "list file").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9]+", parts[1]):
            raise DatasetError(f"{path}:{line_number}: expected '<relative path> <integer label>' (digits 0-9), "
                               f"got {line!r}")
        label = int(parts[1])
        if num_classes is not None and label >= num_classes:
            raise DatasetError(f"{path}:{line_number}: label {label} is outside 0..{num_classes - 1}; does the "
                               f"label CSV match this list file?")
        paths.append(files.inside(root, parts[0], f"{path}:{line_number}", links_may_leave=True) if root else parts[0])
        labels.append(label)
    if not paths:
        raise DatasetError(f"list file {path} lists no videos")
    if check_files:
        warn_missing(paths, path, root)
    return ListFile(tuple(paths), tuple(labels))


def warn_missing(paths, listed_in, root):
    """Stat every video up front (no decoding) and log the missing or empty ones, so a run knows them before it
    starts; they are also handled as bad samples during the run."""
    missing = [p for p in paths if _absent_or_empty(p)]
    if missing:
        log.warning("%d of %d videos in %s are missing or empty under root %r, e.g. %s", len(missing),
                    len(paths), listed_in, root, ", ".join(missing[:5]))


def _absent_or_empty(path):
    if storage.is_remote(path):
        try:
            return storage.info(path)["size"] == 0
        except FileNotFoundError:
            return True
    return not os.path.isfile(path) or os.path.getsize(path) == 0


class VideoFileSource:
    """Videos on disk, decoded with OpenCV on demand."""

    def __init__(self, paths, labels):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels = list(paths), np.asarray(labels, np.int32)

    @classmethod
    def from_list_file(cls, list_file, root="", num_classes=None, check_files=False):
        parsed = read_list_file(list_file, root, num_classes, check_files)
        return cls(parsed.paths, parsed.labels)

    def __len__(self):
        return len(self.paths)

    def name(self, index):
        return self.paths[index]

    def load(self, index, choose_indices):
        return video.read_sampled_frames(self.paths[index], choose_indices), int(self.labels[index])


class TfdsSource:
    """A TFDS dataset in ArrayRecord format with a video feature stored as encoded frames (and a label).

    Records are parsed with TFDS's TensorFlow-free Example proto and only the chosen frames are
    JPEG/PNG-decoded, so reading needs `tensorflow-datasets` but not TensorFlow. `data_pipelines.prepare`
    writes such datasets; TFDS catalogue datasets prepared as array_record (e.g. `ucf101`) work too.
    `data_dir` may be a bucket (gs://): the metadata is read through etils.epath, the records by ArrayRecord's
    own GCS client, one ranged request per record (a record is one video's frames).
    """

    def __init__(self, name, split, data_dir=None, video_key="video", label_key="label"):
        if data_dir and storage.is_remote(data_dir) and not storage.isdir(storage.join(data_dir, name)):
            # Checked first through the one path layer, so a wrong path or bucket is one clear error: TFDS would
            # search its catalogue and ArrayRecord's own GCS client has no such message.
            raise DatasetError(f"no prepared dataset {name!r} in {data_dir} ({storage.join(data_dir, name)} does not "
                               "exist); prepare it there with python -m data_pipelines.prepare --data_dir=... or "
                               "check data.tfds_data_dir")
        try:
            import tensorflow_datasets as tfds
        except ImportError as error:
            raise DatasetError("TFDS sources need the optional extra: pip install tensorflow-datasets") from error
        try:
            source = tfds.data_source(name, split=split, data_dir=data_dir)
        except Exception as error:
            raise DatasetError(f"cannot open TFDS dataset {name!r} split {split!r} in {data_dir!r} as an array_record "
                               f"data source ({error}); prepare it with file_format='array_record'") from error
        features = source.dataset_info.features
        for key in (video_key, label_key):
            if key not in features:
                raise DatasetError(f"TFDS dataset {name!r} has no feature {key!r}; it has {list(features)}")
        self.name_, self.split, self.video_key, self.label_key = name, split, video_key, label_key
        self.class_names = list(getattr(features[label_key], "names", None) or [])
        self._records = source.data_source
        self._length = len(source)

    def __len__(self):
        return self._length

    def name(self, index):
        """The stored source path (datasets written by `prepare`), else dataset[split][index]."""
        feature = self._features(index)
        if "path" in feature and feature["path"].bytes_list.value:
            return feature["path"].bytes_list.value[0].decode()
        return f"{self.name_}[{self.split}][{index}]"

    def _features(self, index):
        from tensorflow_datasets.proto import tf_example_pb2
        return tf_example_pb2.Example.FromString(self._records[index]).features.feature

    def _parse(self, index):
        feature = self._features(index)
        if self.video_key not in feature or self.label_key not in feature:
            raise video.VideoError(self.name(index), "record lacks the video or label feature", "unreadable")
        return feature[self.video_key].bytes_list.value, int(feature[self.label_key].int64_list.value[0])

    def load(self, index, choose_indices):
        encoded, label = self._parse(index)
        if not encoded:
            raise video.VideoError(self.name(index), "record holds no frames", "no_frames")
        indices = np.asarray(choose_indices(len(encoded)), np.int64)
        decoded = {}
        for i in np.unique(indices):
            frame = decode_image_rgb(encoded[i])
            if frame is None:
                raise video.VideoError(self.name(index), f"frame {i} is not a decodable image", "unreadable")
            decoded[int(i)] = frame
        return np.stack([decoded[int(i)] for i in indices]), label


def decode_image_rgb(encoded):
    """JPEG/PNG bytes -> RGB uint8, or None. OpenCV >= 4.10 decodes straight to RGB (the same pixels as
    decoding to BGR and converting, 14% less time per 256-pixel frame: benchmarks/loader_profile.py)."""
    buffer = np.frombuffer(encoded, np.uint8)
    if hasattr(cv2, "IMREAD_COLOR_RGB"):
        return cv2.imdecode(buffer, cv2.IMREAD_COLOR_RGB)
    frame = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    return None if frame is None else cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
