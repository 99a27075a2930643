"""Which frames, and which parts of them, make a video match a label:

    python -m vifi_jax.explain --weights=W [--clip_weights=C] (--labels="a,b" | --labels_file=L) --out=DIR
        [--num_frames=32] VIDEO...

For each video (the official test view: TSN segment centres, short side 256, centre crop) and its top label,
DIR/<video name>.png (prefixed with its position when two videos share a name) shows the sampled frames with a relevance heat-map over each, and <video name>.json
holds the same numbers; the image tower runs once per video for all three:
  - frame contributions: the video–text logit is exp(logit_scale) · mean_t(f_t) · text / |mean_t(f_t)|, a sum
    over frames, so frame t contributes exp(logit_scale) · f_t · text / (T · |mean_t(f_t)|), exactly;
  - relevance maps: *attention rollout* (Abnar & Zuidema 2020) through the image tower — per layer the
    head-averaged attention plus the identity, rows renormalised, multiplied over layers; the CLS row's
    weights on the patches. It is plain rollout, not the gradient-weighted variant of Chefer et al. 2021,
    so a map says where the frame's embedding draws from, for any label.
"""
import logging
import os
import sys

import cv2
import numpy as np
from absl import app, flags

from data_pipelines import cli, files, outputs, sampling, transforms, video
from vifi_jax.cli import flags as cli_flags

FLAGS = flags.FLAGS
METHOD = "attention rollout (Abnar & Zuidema 2020): head-mean attention + identity, rows renormalised, " \
         "multiplied over layers; not gradient-weighted"


def define_flags():
    cli_flags.weights()
    cli_flags.labels()
    cli_flags.out(help_text="Directory for the pictures and JSON files (created).")
    cli_flags.num_frames()


def rollout(attentions):
    """attentions [layers, L, L] (rows sum to 1) -> the rolled-out attention [L, L]: the product, last layer
    first, of 0.5 · A + 0.5 · I with rows renormalised."""
    result = np.eye(attentions.shape[-1])
    for attention in attentions:
        step = 0.5 * attention + 0.5 * np.eye(attention.shape[-1])
        result = (step / step.sum(axis=-1, keepdims=True)) @ result
    return result


def relevance_maps(attention, grid):
    """Head-mean attention [layers, T, L, L] -> per-frame relevance of each patch [T, grid, grid], max 1."""
    maps = np.stack([rollout(a)[0, 1:1 + grid * grid] for a in attention.transpose(1, 0, 2, 3)])
    maps = maps.reshape(-1, grid, grid)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def frame_contributions(logit_scale, per_frame, text_feature):
    """Each frame's exact share of the video–text logit exp(logit_scale) · mean_t(f_t) · text / |mean_t(f_t)|
    (they sum to it), from the frames' projected embeddings [T, D]."""
    norm = np.linalg.norm(per_frame.mean(axis=0))
    return float(logit_scale) * per_frame @ np.asarray(text_feature) / (len(per_frame) * norm)


def explain_frames(model, frames, text):
    """Normalised frames [T, H, W, 3] through the image tower once -> (logits [N], each frame's contribution
    to the top label's logit [T], relevance maps [T, grid, grid], the top label's index)."""
    per_frame, attention = model.encoder.frames_with_attention(frames)
    video_feature = per_frame.mean(axis=0)
    logits = np.asarray(model.encoder.scores((video_feature / np.linalg.norm(video_feature))[None], text))[0]
    top = int(np.argmax(logits))
    grid = model.config["image_resolution"] // model.config["vision_patch_size"]
    return logits, frame_contributions(model.logit_scale, per_frame, text[top]), relevance_maps(attention, grid), top


def overlay(crop, relevance):
    """An RGB uint8 crop with its relevance map as a heat-map over it."""
    heat = cv2.resize(relevance.astype(np.float32), crop.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    coloured = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET)[..., ::-1]
    return cv2.addWeighted(crop, 0.55, coloured, 0.45, 0)


def explain_video(model, path, names, text, out, num_frames=sampling.NUM_FRAMES, stem=None):
    """Write <out>/<stem>.png and .json for one video (stem: the file name without extension); returns the
    JSON content."""
    from vifi_jax.runtime import encoder
    crops, indices = encoder.read_test_view(path, num_frames, model.config["image_resolution"])  # decoded once
    logits, contributions, maps, top = explain_frames(model, transforms.normalize(crops)[0], text)
    if not (np.isfinite(logits).all() and np.isfinite(contributions).all() and np.isfinite(maps).all()):
        raise ValueError("the model's scores are not finite (NaN or infinity): its weights are damaged")
    crops = crops[0]
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    stem = stem or os.path.splitext(os.path.basename(path))[0]
    row = np.concatenate([overlay(c, m) for c, m in zip(crops, maps)], axis=1)
    caption = np.full((28, row.shape[1], 3), 255, np.uint8)
    cv2.putText(caption, f"{names[top]} ({100 * probabilities[top]:.1f}%)", (6, 20), cv2.FONT_HERSHEY_SIMPLEX,
                0.6, (0, 0, 0), 1, cv2.LINE_AA)
    _, png = cv2.imencode(".png", np.concatenate([caption, row])[..., ::-1])
    with files.atomic_write(os.path.join(out, stem + ".png"), "explanation image", "wb") as f:
        f.write(png.tobytes())
    result = {"video": path, "label": names[top], "probability": float(probabilities[top]),
              "logit": float(logits[top]), "frames": [int(i) for i in indices],
              "frame_contributions": [float(c) for c in contributions], "method": METHOD,
              "relevance_maps": np.round(maps, 4).tolist()}
    files.write_json(os.path.join(out, stem + ".json"), result, "explanation")
    return result


def main(argv):
    cli.configure_logging(logging.WARNING)
    paths = argv[1:]
    if not paths or not FLAGS.out:
        raise app.UsageError("give --out and one or more videos")
    names = cli_flags.label_names()
    outputs.claim(FLAGS.out, "explanations", "--out")
    from vifi_jax import api  # jax and the model only once there is work (--help starts at once)
    model = api.load(FLAGS.weights, FLAGS.clip_weights)
    text = model.encode_text(model.class_texts(names))
    failed = 0
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    for k, path in enumerate(paths):
        stem = stems[k] if stems.count(stems[k]) == 1 else f"{k:04d}_{stems[k]}"  # same names in other folders
        try:
            result = explain_video(model, path, names, text, FLAGS.out, FLAGS.num_frames, stem)
        except (video.VideoError, OSError, ValueError, MemoryError, cv2.error) as error:
            print(f"{path}: error: {cli.describe(error)}", flush=True)
            failed += 1
            continue
        print(f"{path}: {result['label']} ({100 * result['probability']:.1f}%)", flush=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    cli.run(main, positional=True)
