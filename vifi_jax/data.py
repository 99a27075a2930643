"""From a config to data: class names, sources and Grain datasets for training and each eval set.

`data.source` is "files" (official list files + label CSVs under `data.splits_dir`, videos under
`data.root`), "tfds" (a TFDS ArrayRecord dataset, e.g. one written by `python -m data_pipelines.prepare`)
or "demo" (procedurally generated clips, written once into the cache directory).
"""
import dataclasses
import hashlib
import json
import os

from data_pipelines import datasets, pipeline, synthetic
from vifi_jax import downloads


@dataclasses.dataclass
class Split:
    """One dataset split: its source and the class names its labels index."""
    source: object
    class_names: list
    description: str


def _path(config, relative):
    return relative if os.path.isabs(relative) else os.path.join(config.data.splits_dir, relative)


def demo_split(config, name, train=False):
    """Generated clips for a named split; the same name and settings give the same files."""
    demo = config.data.demo.to_dict()
    key = hashlib.sha1(json.dumps(demo, sort_keys=True).encode()).hexdigest()[:8]
    root = os.path.join(downloads.cache_dir(), "demo", key)
    seed = int(hashlib.sha1(name.encode()).hexdigest()[:6], 16) + (0 if train else 1)
    list_file, labels = synthetic.make_dataset(root, seed=seed, split=name, **demo)
    names = datasets.read_labels(labels)
    return Split(datasets.VideoFileSource.from_list_file(list_file, root, len(names)), names, f"demo:{name}")


def _labels(config, labels_file):
    names = datasets.read_labels(_path(config, labels_file))
    if config.data.num_classes and len(names) != config.data.num_classes:
        raise datasets.DatasetError(f"{labels_file} lists {len(names)} classes but data.num_classes is "
                                    f"{config.data.num_classes}; fix one of them")
    return names


def train_split(config):
    if config.data.source == "demo":
        return demo_split(config, "train", train=True)
    if config.data.source == "tfds":
        source = datasets.TfdsSource(config.data.tfds_name, config.data.tfds_train_split,
                                     config.data.tfds_data_dir or None)
        names = _labels(config, config.data.labels) if config.data.labels else source.class_names
        return Split(source, names, f"tfds:{config.data.tfds_name}[{config.data.tfds_train_split}]")
    if config.data.source != "files":
        raise ValueError(f"data.source must be files, tfds or demo, got {config.data.source!r}")
    if not config.data.train_file or not config.data.labels:
        raise ValueError("training needs --config.data.train_file and --config.data.labels (official list file and "
                         "label CSV, relative to --config.data.splits_dir)")
    names = _labels(config, config.data.labels)
    source = datasets.VideoFileSource.from_list_file(_path(config, config.data.train_file), config.data.root,
                                                     len(names), config.data.check_files)
    return Split(source, names, config.data.train_file)


def eval_splits(config):
    """{set name: Split} for every entry of config.eval.sets (list_file/labels, or tfds split names)."""
    splits = {}
    for name, spec in config.eval.sets.items():
        if config.data.source == "demo":
            splits[name] = demo_split(config, name)
        elif config.data.source == "tfds":
            source = datasets.TfdsSource(config.data.tfds_name, spec.list_file, config.data.tfds_data_dir or None)
            names = _labels(config, spec.labels) if spec.labels else source.class_names
            splits[name] = Split(source, names, f"tfds:{config.data.tfds_name}[{spec.list_file}]")
        else:
            if not spec.list_file or not spec.labels:
                raise ValueError(f"eval set {name!r} needs --config.eval.sets.{name}.list_file and .labels")
            names = datasets.read_labels(_path(config, spec.labels))
            source = datasets.VideoFileSource.from_list_file(_path(config, spec.list_file), config.data.root,
                                                             len(names), config.data.check_files)
            splits[name] = Split(source, names, spec.list_file)
    if not splits:
        raise ValueError("no evaluation sets: add --config.eval.sets.<name>.list_file/labels")
    return splits


def clip_spec(config, train, num_clips=1, num_crops=1):
    return pipeline.ClipSpec(num_frames=config.data.num_frames, size=config.data.input_size, train=train,
                             num_clips=num_clips, num_crops=num_crops)
