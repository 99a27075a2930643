"""Grain loaders: sources → [B, V, T, H, W, 3] host batches for training and evaluation.

Everything is a function of a *global position* and the seed. Train: position → seeded shuffle, re-drawn
every epoch (`EpochOrder`) → `LoadClip` (sample + decode + augment with a generator seeded by the
position) → batches; process p of P reads the p-th block of every global batch (`BlockPositions`). So the
processes' batches together are the one-process batch, and a run resumes from its update count with any
number of processes: no iterator state is needed. Evaluation pads the videos only to a multiple of the
device count, every video is seen once, and padding and unreadable videos come back with `valid = False`.

A video that cannot be read is never fatal and never hidden: in training it is replaced by another,
drawn from the element's RNG, and each batch carries the source indices and reasons of the videos it
had to skip (`bad_index`, `bad_reason`), which `BadSamples` turns into a report and a stop condition.
"""
import collections
import dataclasses
import gc
import logging
import os
import weakref

import cv2
import grain
from absl import flags
import numpy as np

from data_pipelines import files, sampling, storage, transforms, video

log = logging.getLogger(__name__)

# Why a sample was skipped (VideoError kinds); codes travel in batches, names go into reports.
REASONS = video.KINDS
MAX_REPLACEMENTS = 8


# Where training clips get their flip, colour jitter and grayscale (config: data.augment_on).
AUGMENT_ON = ("device", "host")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """How a clip is sampled and transformed; views V = num_clips × num_crops at test time, 1 in training."""
    num_frames: int = 8
    size: int = 224
    train: bool = True
    num_clips: int = 1
    num_crops: int = 1
    color_jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    flip_prob: float = 0.5
    augment: bool = True  # training clips: TSN sampling, random crop and colour (False: the test view, as
    #                       CLIP4Clip trains retrieval; unreadable videos are still replaced)
    augment_on: str = "host"  # AUGMENT_ON: where flip/jitter/grayscale are applied ("device": the drawn
    #                            parameters are shipped with the uncoloured crops)

    @property
    def num_views(self):
        return 1 if self.train else self.num_clips * self.num_crops


def reason_code(error):
    """The index into REASONS of an exception a source raised (a VideoError's kind, else "error")."""
    return REASONS.index(getattr(error, "kind", "error"))


class LoadClip(grain.transforms.Map):
    """(global position, source index) → {frames [V,T,H,W,3], label, index, valid, bad_index, bad_reason},
    plus the colour parameters (`transforms.COLOR_PARAMS`) of a training clip augmented on the device.

    The random draws (frames, crops, jitter, replacements, a source's `draw_label`: a caption among a video's
    several) come from a generator seeded with (seed, global position), so a clip is the same whichever
    process reads it and however many processes there are."""

    def __init__(self, source, spec, seed=0):
        self.source, self.spec, self.seed = source, spec, seed

    def _views(self, index, rng):
        spec = self.spec
        augmented = spec.train and spec.augment
        frames, label = self.source.load(index, lambda n: sampling.sample_frame_indices(
            n, spec.num_frames, "train" if augmented else "test", rng, num_views=1 if spec.train else spec.num_clips))
        draw_label = getattr(self.source, "draw_label", None)
        if draw_label is not None:
            label = draw_label(index, label, rng)
        if not augmented:
            crops = transforms.test_transform(frames, spec.size, spec.num_crops)
            return crops.reshape(spec.num_views, spec.num_frames, *crops.shape[2:]), label, {}
        frames = transforms.train_crop(frames, rng, spec.size)
        color = transforms.draw_color_params(len(frames), rng, spec.color_jitter_prob, spec.grayscale_prob,
                                             spec.flip_prob)
        if spec.augment_on == "device":
            return frames[None], label, color  # vifi_jax.train.augment applies them in the train step
        return transforms.apply_color_params(frames, color)[None], label, {}  # uint8: normalised on the device

    def _empty(self):
        return np.zeros((self.spec.num_views, self.spec.num_frames, self.spec.size, self.spec.size, 3), np.uint8)

    def map(self, element):
        cv2.setNumThreads(1)  # one core per loader worker: no oversubscription
        video.set_decode_threads(1)
        position, index = int(element[0]), int(element[1])
        rng = np.random.default_rng([self.seed, position])
        bad_index = np.full(MAX_REPLACEMENTS, -1, np.int32)
        bad_reason = np.full(MAX_REPLACEMENTS, -1, np.int32)
        frames, label, color, valid, current = None, 0, {}, index < len(self.source), index
        for attempt in range(MAX_REPLACEMENTS if valid else 0):
            try:
                frames, label, color = self._views(current, rng)
                break
            except (video.VideoError, OSError, ValueError, cv2.error, MemoryError) as error:
                bad_index[attempt], bad_reason[attempt] = current, reason_code(error)
                if not self.spec.train:
                    break
                current = int(rng.integers(len(self.source)))
        if frames is None:
            frames, valid = self._empty(), False
            if self.spec.augment_on == "device":
                color = transforms.identity_color_params(self.spec.num_frames)
        return {"frames": frames, "label": np.int32(label), "index": np.int32(index), "valid": np.bool_(valid),
                "bad_index": bad_index, "bad_reason": bad_reason, **color}


def _process():
    import jax
    return jax.process_index(), jax.process_count()


def iterations_per_epoch(dataset_size, global_batch, reference_world_size=1):
    """Global micro-batches per epoch, counted as the official loader counts them.

    There, a `DistributedSampler` over W ranks pads the shuffled order (cyclically, from its start) to
    ceil(N / W) videos per rank, and each rank's loader drops its last incomplete batch of B / W:
    floor(ceil(N / W) / (B / W)) iterations. W = 8 GPUs in every official run; B is the global batch.
    """
    per_rank, remainder = divmod(global_batch, reference_world_size)
    if remainder or per_rank == 0:
        raise ValueError(f"the global batch {global_batch} must be a multiple of the reference world size "
                         f"{reference_world_size} (train.reference_world_size: GPUs of the run being reproduced)")
    iterations = -(-dataset_size // reference_world_size) // per_rank
    if iterations == 0:
        raise ValueError(f"a global batch of {global_batch} is larger than the {dataset_size} training videos; "
                         "lower train.batch_size")
    return iterations


class EpochOrder:
    """Position in the run -> source index: every epoch a fresh seeded permutation, extended cyclically from
    its start to the epoch's length (the `DistributedSampler` padding), so an epoch is whole global batches."""

    def __init__(self, dataset_size, epoch_length, seed):
        self.size, self.epoch_length = dataset_size, epoch_length
        self.shuffled = grain.MapDataset.range(dataset_size).seed(seed).shuffle()  # index // size = epoch

    def __call__(self, position):
        epoch, offset = divmod(int(position), self.epoch_length)
        return self.shuffled[epoch * self.size + offset % self.size]


class BlockPositions:
    """Local element i of process p → global position: each global batch of B is B consecutive positions,
    and process p reads the p-th block of B / P of each, so the processes' batches, concatenated in process
    order (as `jax.make_array_from_process_local_data` does), are exactly the one-process batch."""

    def __init__(self, global_batch, process_index, process_count):
        self.global_batch, self.local = global_batch, global_batch // process_count
        self.offset = process_index * self.local

    def __call__(self, i):
        batch, within = divmod(int(i), self.local)
        return batch * self.global_batch + self.offset + within


class _Shuffled(grain.transforms.Map):
    def __init__(self, positions, order):
        self.positions, self.order = positions, order

    def map(self, i):
        position = self.positions(i)
        return position, self.order(position)


class _Unshuffled(grain.transforms.Map):
    def map(self, position):
        return position, position


def train_dataset(source, spec, global_batch, seed, num_epochs=1, process=None, reference_world_size=1,
                  start_batch=0):
    """Batched, per-epoch-shuffled training MapDataset of this process's share of every global batch.

    An epoch is `iterations_per_epoch` global batches of `global_batch` videos; each of P processes reads
    `global_batch / P` of every one (`BlockPositions`), and together they read each global batch once.
    What a position holds depends only on the seed, so a run resumes at micro-batch `start_batch` with any
    number of processes.
    """
    process_index, process_count = process or _process()
    if global_batch % process_count:
        raise ValueError(f"the global batch {global_batch} must be a multiple of the {process_count} processes")
    epoch_length = iterations_per_epoch(len(source), global_batch, reference_world_size) * global_batch
    local = global_batch // process_count
    positions = BlockPositions(global_batch, process_index, process_count)
    ds = grain.MapDataset.range(start_batch * local, epoch_length * num_epochs // process_count)
    ds = ds.map(_Shuffled(positions, EpochOrder(len(source), epoch_length, seed)))
    return ds.map(LoadClip(source, spec, seed)).batch(local, drop_remainder=True)


def eval_positions(num_videos, batch_size, process_index, process_count, multiple=1):
    """This process's global positions: every video once, padded only to a multiple of `multiple` (the
    device count), in global batches of `batch_size` × P whose p-th block is process p's; a shorter last
    batch (one more compiled shape) instead of padding it to a full batch."""
    padded = -(-num_videos // multiple) * multiple
    if padded % process_count:
        raise ValueError(f"the device count {multiple} must be a multiple of the {process_count} processes")
    global_batch = batch_size * process_count
    mine = []
    for start in range(0, padded, global_batch):
        local = min(global_batch, padded - start) // process_count
        mine.extend(range(start + process_index * local, start + (process_index + 1) * local))
    return np.asarray(mine, np.int64)


def eval_dataset(source, spec, batch_size, seed=0, process=None, multiple=None):
    """Every video once, padded to a multiple of `multiple` (default: the process count); `batch_size` is per
    process. Padding comes back with `valid = False`."""
    process_index, process_count = process or _process()
    positions = eval_positions(len(source), batch_size, process_index, process_count, multiple or process_count)
    ds = grain.MapDataset.source(positions).map(_Unshuffled())
    return ds.map(LoadClip(source, spec, seed)).batch(batch_size)


def _out_of_shared_memory(batch):
    """Own copies of a batch that worker processes sent through shared memory, so that no array of ours
    (nor, on CPU, a jax array made from one without a copy) keeps a shared segment alive. Each segment's name
    is unlinked at once (its memory goes when Grain drops its last mapping): Grain would unlink it only when
    its array is collected, on a thread that may not run again before the process exits."""
    copies = {}
    for key, value in batch.items():
        copies[key] = np.array(value)
        shm = getattr(value, "shm", None)
        if shm is not None and getattr(value, "_unlink_on_del", False):
            value._unlink_on_del = False
            shm.unlink()
    return copies


# Launchers' counts of the processes they started on this host (torchrun, Slurm, Open MPI).
LOCAL_PROCESS_COUNT_VARIABLES = ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "OMPI_COMM_WORLD_LOCAL_SIZE")


def auto_workers():
    """Loader processes for `num_workers=-1`: the cores this process may use, shared among the JAX processes
    a launcher started on this host, less one for the process itself. Workers only fill a bounded buffer
    (2 batches each), so spare workers wait instead of over-producing; a video host is short of cores, not
    of demand (one H200 at 50% MFU takes ~590 clips/s at T=8; one worker gives ~90 prepared or ~15 raw)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = next((int(os.environ[name]) for name in LOCAL_PROCESS_COUNT_VARIABLES
                  if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0), 1)
    return max(1, cores // local - 1)


# Iterators whose batches come from worker processes, in Grain's shared memory.
_IN_SHARED_MEMORY = weakref.WeakSet()


def iterator(ds, num_workers=0, buffer_size=2):
    """An iterator over a MapDataset, read by `num_workers` processes (0: threads of this one; -1:
    `auto_workers()`). Release it with `close` when done."""
    if num_workers < 0:
        num_workers = auto_workers()
        log.info("data.num_workers=-1: %d loader worker processes", num_workers)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0 if num_workers else 2, prefetch_buffer_size=buffer_size))
    if num_workers:
        if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; outside an absl app use defaults
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=buffer_size))
        ds = ds.map(_out_of_shared_memory)
    batches = iter(ds)
    if num_workers:
        _IN_SHARED_MEMORY.add(batches)
    return batches


def close(batches):
    """Stop an iterator's worker processes and free the shared memory its batches came in.

    Grain's shared-memory arrays wait in reference cycles until the garbage collector runs; segments still
    alive at exit are unlinked by Python's resource tracker with a "leaked shared_memory" warning. Threads
    (no workers) use no shared memory, so no collection: a full one costs 0.15-1 s in a process holding a
    model, at every evaluation."""
    batches.close()
    if batches in _IN_SHARED_MEMORY:
        gc.collect()
        _wait_for_shared_memory_release()


def _wait_for_shared_memory_release():
    """Grain unlinks the segments of collected arrays on a background thread (one thread, first in first out);
    a process that exits before the thread gets to them leaves them to the resource tracker, which warns. A
    no-op task run through that thread returns only after every unlink queued before it."""
    try:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
    except ImportError:  # another Grain layout: nothing to wait for that we know of
        return
    deleter = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if deleter is not None:
        deleter.apply(int)


class TooManyBadSamples(RuntimeError):
    pass


MAX_LOGGED = 20


class BadSamples:
    """Collects the skipped videos reported in batches; writes a JSON report; stops past a bad fraction.

    Counted per video: a source whose elements share videos (every caption of a video an element) says
    which video an element reads (`video_of`) and how many videos it has (`num_videos`)."""

    def __init__(self, source, max_fraction=0.01):
        self.source, self.max_fraction = source, max_fraction
        self._video_of = getattr(source, "video_of", int)
        self.num_videos = getattr(source, "num_videos", len(source))
        self.found = {}  # video -> (an element index that reads it, reason)

    def update(self, batch):
        new = 0
        for index, reason in zip(np.ravel(batch["bad_index"]), np.ravel(batch["bad_reason"])):
            if index < 0:
                continue
            video = self._video_of(int(index))
            if video in self.found:
                continue
            self.found[video] = (int(index), REASONS[int(reason)])
            new += 1
            if len(self.found) <= MAX_LOGGED:
                log.warning("skipped unreadable video %s (%s)%s", self.source.name(int(index)), REASONS[int(reason)],
                            "; further ones are counted and reported, not logged" if len(self.found) == MAX_LOGGED
                            else "")
        if new:
            self.check()

    @property
    def fraction(self):
        return len(self.found) / max(self.num_videos, 1)

    def summary(self):
        by_video = [element for _, element in sorted(self.found.items())]
        return {"count": len(by_video), "dataset_size": self.num_videos, "fraction": self.fraction,
                "max_fraction": self.max_fraction, "by_reason": dict(collections.Counter(r for _, r in by_video)),
                "videos": [{"file": self.source.name(i), "reason": r} for i, r in by_video]}

    def check(self):
        if self.fraction > self.max_fraction:
            examples = "; ".join(f"{self.source.name(i)} ({r})" for i, r in list(self.found.values())[:10])
            raise TooManyBadSamples(
                f"{len(self.found)} of {self.num_videos} videos ({self.fraction:.1%}) cannot be read, more than the "
                f"allowed {self.max_fraction:.1%} (raise data.max_bad_fraction to continue anyway). Examples: "
                f"{examples}")

    def write(self, path):
        storage.makedirs(storage.dirname(storage.absolute(path)))
        files.write_json(path, self.summary(), "report of unreadable videos")
