"""Procedurally generated action clips: a coloured shape moving in a class-specific direction.

Each class has its own colour, shape and direction. ViFi-CLIP mean-pools frames, so direction alone
(left vs right) is invisible to it; colour and shape are visible in every frame, shape even after
grayscale augmentation.

Used as the offline demo set of `configs/zeroshot.py`, by the tests (a tiny CLIP must learn them) and
by the benchmarks. `make_dataset` writes real video files plus an official-format list file and label
CSV, and is cached: a second call with the same arguments only checks the files.
"""
import csv
import json
import logging
import os

import cv2
import numpy as np

COLORS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 80, 230), "yellow": (235, 215, 40)}
SHAPES = ("square", "circle", "triangle", "cross")
MOTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}
GENERATOR_VERSION = 3  # part of the cache key: bump when render_clip changes
FOURCC = {".mp4": "mp4v", ".avi": "XVID", ".webm": "VP90", ".mkv": "MJPG"}

log = logging.getLogger(__name__)


def _class(label):
    colors, motions = list(COLORS), list(MOTIONS)
    return (colors[label % 4], SHAPES[(label + label // 4) % 4], motions[(label + 2 * (label // 4)) % 4])


def class_names(num_classes):
    if not 1 <= num_classes <= 16:
        raise ValueError(f"num_classes must be in 1..16, got {num_classes}")
    return [f"{color} {shape} moving {motion}" for color, shape, motion in map(_class, range(num_classes))]


def _draw(frame, shape, x, y, side, color):
    if shape == "square":
        frame[y:y + side, x:x + side] = color
    elif shape == "circle":
        cv2.circle(frame, (x + side // 2, y + side // 2), side // 2, color, -1)
    elif shape == "triangle":
        points = np.array([[x + side // 2, y], [x, y + side - 1], [x + side - 1, y + side - 1]], np.int32)
        cv2.fillPoly(frame, [points], color)
    else:
        bar = max(1, side // 3)
        frame[y + (side - bar) // 2:y + (side + bar) // 2, x:x + side] = color
        frame[y:y + side, x + (side - bar) // 2:x + (side + bar) // 2] = color


def render_clip(label, num_frames, height, width, rng):
    """uint8 [T, H, W, 3]: a smooth random grey background and the class's shape crossing it."""
    color, shape, motion = _class(label)
    low = np.repeat(rng.integers(60, 150, size=(4, 4, 1)), 3, axis=2).astype(np.uint8)  # grey, so colour is the object's
    background = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    side = max(6, min(height, width) // 3)
    dx, dy = MOTIONS[motion]
    travel_x, travel_y = width - side, height - side
    x0 = rng.integers(0, travel_x + 1) if dx == 0 else (0 if dx > 0 else travel_x)
    y0 = rng.integers(0, travel_y + 1) if dy == 0 else (0 if dy > 0 else travel_y)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        progress = t / max(num_frames - 1, 1)
        x = int(x0 + dx * progress * travel_x)
        y = int(y0 + dy * progress * travel_y)
        frames[t] = background
        _draw(frames[t], shape, x, y, side, COLORS[color])
    return frames


def write_video(path, frames, fps=25):
    """Write RGB uint8 frames with OpenCV; the codec follows the extension (.mp4, .avi, .webm, .mkv)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FOURCC:
        raise ValueError(f"cannot choose a codec for {path}; use one of {sorted(FOURCC)}")
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*FOURCC[ext]), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {FOURCC[ext]} video to {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def make_dataset(root, num_classes=4, videos_per_class=8, num_frames=24, height=96, width=128, seed=0,
                 ext=".mp4", split="train"):
    """Write `root/<split>/*.ext`, `root/<split>.txt` and `root/labels.csv`; returns (list_file, labels_csv)."""
    spec = dict(generator=GENERATOR_VERSION, num_classes=num_classes, videos_per_class=videos_per_class, num_frames=num_frames,
                height=height, width=width, seed=seed, ext=ext)
    list_file, labels_csv = os.path.join(root, f"{split}.txt"), os.path.join(root, "labels.csv")
    spec_file = os.path.join(root, f"{split}.spec.json")
    names = class_names(num_classes)
    entries = [(f"{split}/{label:02d}_{i:03d}{ext}", label)
               for label in range(num_classes) for i in range(videos_per_class)]
    if os.path.isfile(spec_file) and os.path.isfile(list_file) and os.path.isfile(labels_csv):
        with open(spec_file) as f:
            if json.load(f) == spec and all(os.path.isfile(os.path.join(root, p)) for p, _ in entries):
                return list_file, labels_csv
    os.makedirs(os.path.join(root, split), exist_ok=True)
    log.info("writing %d generated clips to %s", len(entries), os.path.join(root, split))
    rng = np.random.default_rng([seed, len(split)])
    for relative, label in entries:
        write_video(os.path.join(root, relative), render_clip(label, num_frames, height, width, rng))
    with open(labels_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name"])
        writer.writerows(enumerate(names))
    with open(list_file, "w") as f:
        f.writelines(f"{relative} {label}\n" for relative, label in entries)
    with open(spec_file, "w") as f:
        json.dump(spec, f)
    return list_file, labels_csv
