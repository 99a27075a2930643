"""The t-SNE of exported video features, coloured by class (the paper's Figure 5):

    python -m vifi_jax.tsne --features=DIR --out=tsne.png [--labels_file=labels.csv] [--perplexity=30] [--seed=0]

DIR is a video-level export (`python -m vifi_jax.extract --list_file=...` records each video's class in the
manifest; without one, a video's class is the name of its parent directory). Writes the PNG and, beside it,
a JSON file with each video's 2-D position and class. Needs matplotlib and scikit-learn
(`pip install -r requirements-viz.txt`).
"""
import os

import numpy as np
from absl import flags

from data_pipelines import cli, datasets, files
from vifi_jax import features
from vifi_jax.cli import flags as cli_flags

FLAGS = flags.FLAGS


def define_flags():
    cli_flags.features()
    cli_flags.out("tsne.png", "PNG to write (and a .json beside it).")
    cli_flags.labels_file("Label CSV (id,name) naming the manifest's class numbers.")
    cli_flags.alias("label_names", "labels_file")  # the earlier spelling
    flags.DEFINE_float("perplexity", 30.0, "t-SNE perplexity (lowered to fit small sets).")
    flags.DEFINE_integer("seed", 0, "t-SNE random seed.")
    cli_flags.overwrite("Replace an existing --out PNG and its JSON.")


def classes(entries, label_names=None):
    """The class of each stored video: its manifest label (named by `label_names`), else its folder."""
    names = datasets.read_labels(label_names) if label_names else None
    found = []
    for entry in entries:
        label = entry.get("label")
        if label is None:
            found.append(os.path.basename(os.path.dirname(entry["video"])) or "?")
        else:
            found.append(names[label] if names and label < len(names) else str(label))
    return found


def embed(vectors, perplexity=30.0, seed=0):
    """2-D t-SNE positions [N, 2] of L2-normalised features (cosine geometry)."""
    from sklearn.manifold import TSNE
    if len(vectors) < 3:
        raise features.FeatureStoreError(f"t-SNE needs at least 3 videos, the export has {len(vectors)}")
    perplexity = min(perplexity, (len(vectors) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="random",
                random_state=seed).fit_transform(vectors)


def plot(positions, labels, out, title="t-SNE of video features"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(7, 6), dpi=100)
    names = sorted(set(labels))
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for k, name in enumerate(names):
        chosen = np.array([label == name for label in labels])
        axes.scatter(positions[chosen, 0], positions[chosen, 1], s=14, color=colours(k % colours.N), label=name)
    if len(names) <= 20:
        axes.legend(fontsize=7, markerscale=1.5, loc="best")
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    figure.savefig(out, format="png")
    plt.close(figure)


def tsne(directory, out, label_names=None, perplexity=30.0, seed=0, overwrite=False):
    """Write the t-SNE PNG and JSON of an export; returns the JSON's content. Existing files are replaced
    only with `overwrite`."""
    json_path = os.path.splitext(out)[0] + ".json"
    existing = [p for p in (out, json_path) if os.path.lexists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} exist; pass --overwrite to replace them, or choose another --out")
    if any(not os.path.isfile(p) or os.path.islink(p) for p in existing):
        raise FileExistsError(f"{' or '.join(existing)} is not a regular file; choose another --out")
    store = features.read(directory, level="video")
    paths = [e["video"] for e in store.entries]
    labels = classes(store.entries, label_names)
    positions = embed(store.features, perplexity, seed)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with files.atomic_write(out, "t-SNE plot", "wb") as f:
        plot(positions, labels, f)
    result = {"videos": [{"video": p, "class": c, "x": float(x), "y": float(y)}
                         for p, c, (x, y) in zip(paths, labels, positions)]}
    files.write_json(json_path, result, "t-SNE positions")
    return result


def main(argv):
    result = tsne(cli_flags.features_directory(), FLAGS.out, FLAGS.labels_file, FLAGS.perplexity, FLAGS.seed,
                  FLAGS.overwrite)
    print(f"wrote {FLAGS.out} ({len(result['videos'])} videos)")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
