"""Transforms: crop boxes and sizes against mmaction's formulas, shared spatial choices, per-frame jitter."""
import numpy as np
import pytest

from data_pipelines import transforms


def train_transform(frames, rng, size=224, color_jitter_prob=0.8, grayscale_prob=0.2, flip_prob=0.5):
    """The official training augmentation of one clip as the loader's host path runs it."""
    frames = transforms.train_crop(frames, rng, size)
    return transforms.apply_color_params(frames, transforms.draw_color_params(len(frames), rng, color_jitter_prob,
                                                                               grayscale_prob, flip_prob))


def gradient_clip(num_frames=4, height=240, width=320):
    y, x = np.mgrid[:height, :width]
    frame = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)
    return np.repeat(frame[None], num_frames, axis=0)


def test_short_side_uses_mmcv_rounding():
    assert transforms.short_side_size(240, 320, 256) == (256, 341)  # 341.33 -> 341
    assert transforms.short_side_size(360, 202, 256) == (456, 256)  # 456.2 -> 456
    assert transforms.resize_short_side(gradient_clip(2), 256).shape == (2, 256, 341, 3)


def test_multi_scale_crop_draws_every_official_box_and_no_other():
    rng = np.random.default_rng(0)
    drawn = {transforms.multi_scale_crop_box(256, 341, rng) for _ in range(4000)}
    # Worked out by hand from mmaction's MultiScaleCrop (scales 1, .875, .75, .66 of the short side 256:
    # sides 256, 224, 192, 168; width and height at most one scale apart) on a 341 x 256 frame:
    # (crop w, crop h): (w_step, h_step) = ((341 - w) // 4, (256 - h) // 4)
    steps = {(256, 256): (21, 0), (224, 256): (29, 0), (256, 224): (21, 8), (224, 224): (29, 8),
             (192, 224): (37, 8), (224, 192): (29, 16), (192, 192): (37, 16), (168, 192): (43, 16),
             (192, 168): (37, 22), (168, 168): (43, 22)}
    expected = set()
    for (w, h), (w_step, h_step) in steps.items():  # the five fixed offsets (more_fix_crop=False)
        for x, y in [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]:
            expected.add((x, y, w, h))
    assert drawn == expected and len(expected) == 46  # 10 sizes x 5 positions; full-height crops coincide
    assert (116, 32, 224, 224) in drawn and (58, 16, 224, 224) in drawn  # steps 29 and 8 for 224 x 224


def test_test_crops():
    assert transforms.center_crop_box(256, 341, 224) == (58, 16, 224, 224)
    assert transforms.three_crop_boxes(224, 298, 224) == [(0, 0, 224, 224), (74, 0, 224, 224), (37, 0, 224, 224)]
    assert transforms.three_crop_boxes(300, 224, 224) == [(0, 0, 224, 224), (0, 76, 224, 224), (0, 38, 224, 224)]
    clip = gradient_clip(3, 240, 320)
    one = transforms.test_transform(clip, 224, 1)
    assert one.shape == (1, 3, 224, 224, 3)
    np.testing.assert_array_equal(one[0], transforms.resize_short_side(clip, 256)[:, 16:240, 58:282])
    three = transforms.test_transform(clip, 224, 3)
    resized = transforms.resize_short_side(clip, 224)
    assert resized.shape == (3, 224, 299, 3) and three.shape == (3, 3, 224, 224, 3)
    for crop, x in zip(three, (0, 74, 37)):
        np.testing.assert_array_equal(crop, resized[:, :, x:x + 224])
    with pytest.raises(ValueError, match="1 or 3"):
        transforms.test_transform(clip, 224, 2)


def test_train_transform_shares_crop_and_flip_across_frames():
    clip = gradient_clip(5)
    plain = train_transform(clip, np.random.default_rng(3), color_jitter_prob=0, grayscale_prob=0,
                                       flip_prob=0)
    assert plain.shape == (5, 224, 224, 3) and plain.dtype == np.uint8
    assert all((f == plain[0]).all() for f in plain)
    flipped = train_transform(clip, np.random.default_rng(3), color_jitter_prob=0, grayscale_prob=0,
                                         flip_prob=1)
    np.testing.assert_array_equal(flipped, plain[:, :, ::-1])


def test_color_jitter_is_redrawn_per_frame_and_grayscale_per_clip():
    clip = gradient_clip(6)
    jittered = train_transform(clip, np.random.default_rng(1), color_jitter_prob=1, grayscale_prob=0)
    assert len({f.tobytes() for f in jittered}) == 6
    gray = train_transform(clip, np.random.default_rng(1), color_jitter_prob=0, grayscale_prob=1)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_pixel_ops():
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    assert transforms.grayscale(red[None])[0, 0, 0].tolist() == [76, 76, 76]  # PIL "L": 0.299 * 255
    np.testing.assert_array_equal(transforms.adjust_brightness(red, 1.0), red)
    assert transforms.adjust_brightness(red, 0.5)[0, 0].tolist() == [127, 0, 0]
    assert transforms.adjust_saturation(red, 0.0)[0, 0].tolist() == [76, 76, 76]
    assert transforms.adjust_contrast(red, 0.0)[0, 0].tolist() == [76, 76, 76]
    green = transforms.adjust_hue(red, 1 / 3)[0, 0]
    assert green[1] > 240 and green[0] < 15 and green[2] < 15


def test_normalize_statistics():
    x = np.array([[123.675, 116.28, 103.53], [255, 255, 255]], np.float32).astype(np.uint8)
    out = transforms.normalize(np.array([[124, 116, 104]], np.uint8))
    np.testing.assert_allclose(out, [[(124 - 123.675) / 58.395, (116 - 116.28) / 57.12, (104 - 103.53) / 57.375]],
                               rtol=1e-5)
    clip = transforms.normalize(x, "clip")
    np.testing.assert_allclose(clip[1], (1 - np.array([0.48145466, 0.4578275, 0.40821073])) /
                               np.array([0.26862954, 0.26130258, 0.27577711]), rtol=1e-5)


def test_brightness_and_contrast_tables_give_the_formulas_pixels():
    """The 256-entry tables compute exactly uint8(clip(x·f)) and uint8(clip(m + f·(x − m))) in float32."""
    rng = np.random.default_rng(5)
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=-1)
    for frame in (every_value, rng.integers(0, 256, (31, 47, 3), np.uint8)):
        for factor in rng.uniform(0.6, 1.4, 20):
            want = np.clip(frame.astype(np.float32) * np.float32(factor), 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(transforms.adjust_brightness(frame, factor), want)
            r, g, b = (frame[..., c].astype(np.int64) for c in range(3))
            luma = (r * 19595 + g * 38470 + b * 7471 + 32768) >> 16
            mean = int(luma.mean() + 0.5)  # PIL: ImageStat's mean of convert("L"), rounded
            want = np.clip(np.float32(mean) + np.float32(factor) * (frame.astype(np.float32) - np.float32(mean)), 0,
                           255).astype(np.uint8)
            np.testing.assert_array_equal(transforms.adjust_contrast(frame, factor), want)


def test_drawing_then_applying_is_the_inline_augmentation():
    """train_transform (train_crop, draw_color_params, apply_color_params) consumes the generator as the
    augmentation written inline does, so seeds give the clips they always gave, and the device path gets
    the same draws."""
    clip = np.random.default_rng(11).integers(0, 256, (6, 90, 120, 3), dtype=np.uint8)

    def inline(frames, rng):
        frames = transforms.train_crop(frames, rng, 64)
        if rng.random() < 0.5:
            frames = frames[:, :, ::-1]
        if rng.random() < 0.8:
            frames = np.stack([transforms.color_jitter_frame(f, rng) for f in frames])
        if rng.random() < 0.2:
            frames = transforms.grayscale(frames)
        return frames

    for seed in range(12):
        np.testing.assert_array_equal(train_transform(clip, np.random.default_rng(seed), 64),
                                      inline(clip, np.random.default_rng(seed)))
