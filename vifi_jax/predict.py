"""Classify videos with your own labels:

    python -m vifi_jax.predict --weights=W (--labels="archery,bowling,..." | --labels_file=labels.csv)
        [--top_k=5] [--json] [--num_frames=32] [--text_mode=template|bare|prompt] [--verbose] VIDEO...

W is anything `vifi_jax.load` accepts (a ViFi-CLIP .pth with --clip_weights, OpenAI .pt, a vifi_jax
directory, openai:ViT-B/16). Each video goes through the official test pipeline (`vifi_jax.load_video`:
TSN centre frames, short side 256, centre crop, ImageNet statistics). Class texts are "a photo of a
{label}.", or the model's learned prompts for a prompting (bridge-and-prompt) model. Each video's result
is printed as soon as it is known (a table, or with --json one JSON object per line). A missing,
undecodable or oversized video gets its own error; the others are still classified. Exit status 1 if any
failed.
"""
import json
import logging
import sys

import numpy as np
from absl import app, flags

from data_pipelines import cli, sampling, video
from vifi_jax.cli import flags as cli_flags

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a program (the shared ones are defined once, see cli.flags)."""
    cli_flags.weights()
    cli_flags.labels()
    cli_flags.top_k()
    cli_flags.num_frames()
    flags.DEFINE_enum("text_mode", None, ["template", "bare", "prompt"],
                      "Class text: 'a photo of a {}.' (template), the bare name, or through the model's learned "
                      "prompts (prompt). Default: prompt for a model with text prompts, template otherwise.")
    cli_flags.json_output("Print one JSON object per video and line (JSON Lines) instead of a table.")


def classify(model, paths, names, top_k=5, num_frames=sampling.NUM_FRAMES, text_mode=None):
    """Yield {video, labels: [{label, probability}]} or {video, error} per video, in order, as each is done.

    Any failure on one video (unreadable, too large, out of memory, ...) becomes that video's error."""
    import cv2
    import jax

    from vifi_jax import api
    from vifi_jax.runtime import encoder
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    text = model.encode_text(model.class_texts(names, text_mode))
    size = model.config["image_resolution"]
    for path in paths:
        try:
            frames = api.load_video(path, num_frames, size)
            probs = np.asarray(jax.nn.softmax(model.logits(frames, text)))[0]
            if not np.isfinite(probs).all():
                raise ValueError("the model's scores are not finite (NaN or infinity): its weights are damaged")
        except (video.VideoError, OSError, ValueError, MemoryError, cv2.error) as error:
            yield {"video": path, "error": cli.describe(error)}
            continue
        except RuntimeError as error:
            if not encoder.out_of_memory(error):
                raise
            yield {"video": path, "error": f"out of memory classifying it ({cli.describe(error)[:200]}); try fewer "
                                           "--num_frames or a smaller model"}
            continue
        best = np.argsort(-probs, kind="stable")[:top_k]
        yield {"video": path, "labels": [{"label": names[i], "probability": float(probs[i])} for i in best]}


def printable(text):
    """`text` on one line: control characters (a newline in a file name) are escaped, not printed."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def format_result(result):
    """One video's lines of the table."""
    lines = [printable(result["video"])]
    if "error" in result:
        return lines + [f"  error: {printable(result['error'])}"]
    width = max(len(printable(x["label"])) for x in result["labels"])
    return lines + [f"  {printable(x['label']):<{width}}  {100 * x['probability']:6.2f}%" for x in result["labels"]]


def main(argv):
    cli.configure_logging(logging.WARNING)  # only the table (or JSON) on stdout; warnings on stderr
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more video files")
    names = cli_flags.label_names(at_least=2)
    import jax.numpy as jnp  # jax and the model only once there is work (--help starts at once)

    from vifi_jax import api
    model = api.load(FLAGS.weights, FLAGS.clip_weights, jnp.float32)
    failed = 0
    for result in classify(model, paths, names, FLAGS.top_k, FLAGS.num_frames, FLAGS.text_mode):
        print(json.dumps(result, allow_nan=False) if FLAGS.json else "\n".join(format_result(result)), flush=True)
        failed += "error" in result
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    cli.run(main, positional=True)
