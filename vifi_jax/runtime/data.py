"""From a config to data: class names, sources and Grain datasets for training and each eval set.

`data.source` is "files" (official list files + label CSVs under `data.splits_dir`, videos under
`data.root`), "tfds" (splits of a TFDS ArrayRecord dataset, e.g. one written by `python -m
data_pipelines.prepare`: `data.tfds_train_split`, `eval.sets.<name>.tfds_split`) or "demo" (procedurally
generated clips, written once into the cache directory). Retrieval training reads captioned videos
(`captioned_train_split`): caption files under `data.splits_dir`, videos `data.root/<video id><suffix>`.
"""
import dataclasses
import hashlib
import json
import os

from data_pipelines import captions, datasets, files, pipeline, storage, synthetic
from vifi_jax.weights import downloads


@dataclasses.dataclass
class Split:
    """One dataset split: its source and the class names its labels index."""
    source: object
    class_names: list
    description: str


def path_of(config, relative):
    """A list, label or caption file named in the config: as given when absolute or a URL, else under
    `data.splits_dir`."""
    if os.path.isabs(relative) or storage.is_remote(relative):
        return relative
    return storage.join(config.data.splits_dir, relative)


def video_path(config, video_id, listed_in):
    """`data.root/<video_id><retrieval.video_suffix>` (an id that leaves the root is refused, naming the file
    that listed it); the id as written with an empty root."""
    name = video_id + config.retrieval.video_suffix
    root = config.data.root
    return files.inside(root, name, f"video {video_id!r} of {listed_in}", links_may_leave=True) if root else name


def demo_captions(name):
    """A generated clip's captions: its class ("red square moving right") and what every frame shows ("a red
    square"), so clips have several captions to draw from."""
    color, shape = name.split()[:2]
    return [name, f"a {color} {shape}"]


def captioned_train_split(config):
    """Split(CaptionedVideoSource, its captions, description) for retrieval training: the demo clips
    (`demo_captions`), CLIP4Clip's MSR-VTT files (`retrieval.train_captions=MSRVTT_data.json` with
    `retrieval.train_videos=MSRVTT_train.9k.csv`) or a captions CSV/JSON of {video, caption}."""
    r = config.retrieval
    if config.data.source == "demo":
        clips = demo_split(config, "train", train=True)
        paths = clips.source.paths
        per_video = [demo_captions(clips.class_names[label]) for label in clips.source.labels]
        description = "demo:train"
    else:  # data.source is files: config_checks refuses the others for retrieval training
        if not r.train_captions:
            raise ValueError("retrieval training needs --config.retrieval.train_captions (MSRVTT_data.json with "
                             "--config.retrieval.train_videos=MSRVTT_train.9k.csv, or a CSV/JSON of video, caption)")
        if r.train_videos:
            grouped = captions.read_msrvtt(path_of(config, r.train_captions), path_of(config, r.train_videos))
        else:
            grouped = captions.group(captions.read_pairs(path_of(config, r.train_captions)))
        paths = [video_path(config, video_id, r.train_captions) for video_id, _ in grouped]
        per_video = [texts for _, texts in grouped]
        description = r.train_captions
        if config.data.check_files:
            datasets.warn_missing(paths, r.train_captions, config.data.root)
    source = captions.CaptionedVideoSource(paths, per_video, r.every_caption)
    return Split(source, source.captions, description)


def demo_split(config, name, train=False):
    """Generated clips for a named split; the same name and settings give the same files."""
    demo = config.data.demo.to_dict()
    key = hashlib.sha1(json.dumps(demo, sort_keys=True).encode()).hexdigest()[:8]
    root = os.path.join(downloads.cache_dir(), "demo", key)
    seed = int(hashlib.sha1(name.encode()).hexdigest()[:6], 16) + (0 if train else 1)
    sizes = {k: v for k, v in demo.items() if k != "video_frames"}
    list_file, labels = synthetic.make_dataset(root, seed=seed, split=name, num_frames=demo["video_frames"], **sizes)
    names = datasets.read_labels(labels)
    return Split(datasets.VideoFileSource.from_list_file(list_file, root, len(names)), names, f"demo:{name}")


def split(config, name, list_file, labels, tfds_split, train=False):
    """One Split from `config.data.source`: an official list file + label CSV, a TFDS split, or demo clips.

    Training labels are checked against `data.num_classes`; evaluation sets have their own class lists
    (base and novel classes, K600's three splits)."""
    what = "data" if train else f"eval.sets.{name}"
    split_field = "data.tfds_train_split" if train else f"{what}.tfds_split"
    source_kind = config.data.source
    if source_kind == "demo":
        return demo_split(config, name, train)
    if source_kind == "tfds":
        if not tfds_split:
            raise ValueError(f"{name}: data.source=tfds needs --config.{split_field} (a split of the dataset)")
        source = datasets.TfdsSource(config.data.tfds_name, tfds_split, config.data.tfds_data_dir or None)
        names = _labels(config, labels, train) if labels else source.class_names
        return Split(source, names, f"tfds:{config.data.tfds_name}[{tfds_split}]")
    if source_kind != "files":
        raise ValueError(f"data.source must be files, tfds or demo, got {source_kind!r}")
    if not list_file or not labels:
        fields = "data.train_file and data.labels" if train else f"{what}.list_file and {what}.labels"
        raise ValueError(f"{name}: data.source=files needs --config.{fields.replace(' and ', ' and --config.')} "
                         "(an official list file and label CSV, relative to --config.data.splits_dir)")
    names = _labels(config, labels, train)
    source = datasets.VideoFileSource.from_list_file(path_of(config, list_file), config.data.root, len(names),
                                                     config.data.check_files)
    return Split(source, names, list_file)


def _labels(config, labels_file, train):
    names = datasets.read_labels(path_of(config, labels_file))
    if train and config.data.num_classes and len(names) != config.data.num_classes:
        raise datasets.DatasetError(f"{labels_file} lists {len(names)} classes but data.num_classes is "
                                    f"{config.data.num_classes}; fix one of them")
    return names


def readable_class_names(config, labels_file):
    """The class names of a label CSV of the config when it can be read here, else None (ahead-of-time
    compilation sizes the text side by them, or by placeholders when the dataset is elsewhere)."""
    if config.data.source != "files" or not labels_file:
        return None
    try:
        return datasets.read_labels(path_of(config, labels_file))
    except (OSError, ValueError):
        return None


def train_split(config):
    d = config.data
    return split(config, "train", d.train_file, d.labels, d.tfds_train_split, train=True)


def eval_splits(config):
    """{set name: Split} for every entry of config.eval.sets."""
    if not config.eval.sets:
        raise ValueError("no evaluation sets: add --config.eval.sets.<name>.list_file/labels")
    return {name: split(config, name, spec.list_file, spec.labels, spec.get("tfds_split", ""))
            for name, spec in config.eval.sets.items()}


def clip_spec(config, train, num_clips=1, num_crops=1):
    """How clips are read. Retrieval training reads the test view (uniform frames, centre crop, no
    augmentation), as CLIP4Clip trains."""
    augment = train and config.task != "retrieval"
    return pipeline.ClipSpec(num_frames=config.data.num_frames, size=config.data.input_size, train=train,
                             num_clips=num_clips, num_crops=num_crops, augment=augment,
                             augment_on=config.data.augment_on if augment else "host")
