"""ViFi-CLIP's frame transforms in numpy/OpenCV, applied to a clip [T, H, W, 3] of RGB uint8 frames.

Train (official order): short side to 256, MultiScaleCrop (scales 1, .875, .75, .66, five fixed
positions, neighbouring scales only), resize to 224, horizontal flip p=0.5, colour jitter with
probability 0.8 per clip whose factors and op order are re-drawn per frame (torchvision semantics),
grayscale p=0.2. Test: short side 256 + centre crop, or short side 224 + three crops along the long
side. Spatial choices are shared by all frames of a clip. Every function returns uint8 frames;
`normalize` (ImageNet statistics on 0-255, as the official code; CLIP's as an option) is separate so
that batches cross process boundaries as uint8 and are normalised on the accelerator.

Training draws and applies separately: `train_crop`, then `draw_color_params` (every flip/jitter/grayscale
choice) and `apply_color_params` here, or `vifi_jax.train.augment` inside the train step on the same draws.
"""
import cv2
import numpy as np

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
CLIP_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
CLIP_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}

MULTI_SCALE_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)
# ITU-R 601-2 luma (0.299, 0.587, 0.114) in the 16-bit fixed point of PIL's convert("L"), which the official
# ColorJitter (saturation, contrast) and Grayscale use: integers, so every implementation gets the same values.
LUMA_WEIGHTS = (19595, 38470, 7471)


def short_side_size(height, width, short_side):
    """(new_h, new_w) with the short side at `short_side`, aspect kept, mmcv rounding int(x*s + 0.5)."""
    scale = short_side / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize(frames, height, width):
    """Bilinear resize of every frame (cv2.INTER_LINEAR, as mmcv.imresize), each straight into the output."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((len(frames), height, width, frames.shape[3]), frames.dtype)
    for frame, resized in zip(frames, out):
        cv2.resize(frame, (width, height), dst=resized, interpolation=cv2.INTER_LINEAR)
    return out


def resize_short_side(frames, short_side):
    return resize(frames, *short_side_size(frames.shape[1], frames.shape[2], short_side))


def crop(frames, box):
    x, y, w, h = box
    return frames[:, y:y + h, x:x + w]


def multi_scale_crop_box(height, width, rng, input_size=224, scales=MULTI_SCALE_CROP_SCALES, max_scale_gap=1):
    """(x, y, w, h) of mmaction's MultiScaleCrop with random_crop=False and 5 fixed crops."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    candidates = [(w, h) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_scale_gap]
    w, h = candidates[rng.integers(len(candidates))]
    w = input_size if abs(w - input_size) < 3 else w
    h = input_size if abs(h - input_size) < 3 else h
    w_step, h_step = (width - w) // 4, (height - h) // 4
    offsets = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
    x, y = offsets[rng.integers(len(offsets))]
    return x, y, w, h


def center_crop_box(height, width, size):
    return (width - size) // 2, (height - size) // 2, size, size


def three_crop_boxes(height, width, size):
    """Left/top, right/bottom and middle crops along the long side (mmaction ThreeCrop order)."""
    if height == size:
        step = (width - size) // 2
        return [(0, 0, size, size), (2 * step, 0, size, size), (step, 0, size, size)]
    if width == size:
        step = (height - size) // 2
        return [(0, 0, size, size), (0, 2 * step, size, size), (0, step, size, size)]
    raise ValueError(f"three crops of {size} need one side equal to {size}, got {height}x{width}")


def _to_uint8(x):
    return np.clip(x, 0, 255).astype(np.uint8)


def luma(frames):
    """8-bit luma of uint8 RGB as PIL's convert("L"): (19595 r + 38470 g + 7471 b + 2^15) >> 16, int32."""
    x = frames.astype(np.int32)
    return (x[..., 0] * LUMA_WEIGHTS[0] + x[..., 1] * LUMA_WEIGHTS[1] + x[..., 2] * LUMA_WEIGHTS[2] + 32768) >> 16


def rounded_mean(values):
    """int(mean + 0.5) of non-negative integers (PIL's ImageStat mean as ImageEnhance.Contrast rounds it),
    in integer arithmetic: (2·sum + n) // (2·n)."""
    n = values.size
    return (2 * int(values.sum(dtype=np.int64)) + n) // (2 * n)


_VALUES = np.arange(256, dtype=np.float32)


def _apply_table(frame, table):
    """An elementwise uint8 -> uint8 function as a 256-entry table: the same pixels, ~15x faster."""
    return cv2.LUT(np.ascontiguousarray(frame), table)


def adjust_brightness(frame, factor):
    """PIL's ImageEnhance.Brightness: uint8(clip(x · factor)) in float32, through a table of its 256 values."""
    return _apply_table(frame, _to_uint8(_VALUES * np.float32(factor)))


def adjust_contrast(frame, factor):
    """PIL's ImageEnhance.Contrast: uint8(clip(m + factor · (x − m))), m the frame's rounded mean luma."""
    mean = np.float32(rounded_mean(luma(frame)))
    return _apply_table(frame, _to_uint8(mean + np.float32(factor) * (_VALUES - mean)))


def adjust_saturation(frame, factor):
    """PIL's ImageEnhance.Color: uint8(clip(l + factor · (x − l))), l each pixel's luma."""
    gray = luma(frame)[..., None].astype(np.float32)
    return _to_uint8(gray + np.float32(factor) * (frame.astype(np.float32) - gray))


def shift_hue(frame, steps):
    """Add `steps` to the hue in 8-bit HSV (256 steps a turn), wrapping as torchvision's PIL path does."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + steps) % 256
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def hue_steps(factor):
    """A hue rotation of `factor` of a turn as steps of the 8-bit hue: int(factor · 255)."""
    return int(factor * 255)


def adjust_hue(frame, factor):
    return shift_hue(frame, hue_steps(factor))


def draw_jitter(rng, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1):
    """torchvision ColorJitter's draws for one frame: the order of the four ops, the brightness, contrast
    and saturation factors, and the hue shift in 8-bit steps."""
    order = rng.permutation(4)
    factors = (rng.uniform(1 - brightness, 1 + brightness), rng.uniform(1 - contrast, 1 + contrast),
               rng.uniform(1 - saturation, 1 + saturation))
    return order, factors, hue_steps(rng.uniform(-hue, hue))


def jitter_frame(frame, order, factors, hue_steps):
    """Brightness, contrast and saturation (`factors`) and a hue shift of `hue_steps`, in the drawn order."""
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, shift_hue)
    arguments = (*factors, hue_steps)
    for op in order:
        frame = ops[op](frame, arguments[op])
    return frame


def color_jitter_frame(frame, rng, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1):
    """torchvision ColorJitter on one frame: factors and the order of the four ops drawn afresh."""
    return jitter_frame(frame, *draw_jitter(rng, brightness, contrast, saturation, hue))


def grayscale(frames):
    """torchvision's Grayscale(3) on PIL images: convert("L"), the luma in all three channels."""
    return np.repeat(luma(frames).astype(np.uint8)[..., None], 3, axis=-1)


def train_crop(frames, rng, size=224):
    """The official training geometry of one clip: short side 256/224·size, MultiScaleCrop, resize to size."""
    frames = resize_short_side(frames, int(256 / 224 * size))
    frames = crop(frames, multi_scale_crop_box(frames.shape[1], frames.shape[2], rng, input_size=size))
    return resize(frames, size, size)


def draw_color_params(num_frames, rng, color_jitter_prob=0.8, grayscale_prob=0.2, flip_prob=0.5):
    """Every random choice after the crop, drawn in the order the host path has always drawn them.

    {"flip", "jitter", "gray"}: per-clip booleans; "order" [T, 4] int32, "factors" [T, 3] float32
    (brightness, contrast, saturation; the float32 values the host arithmetic uses) and "hue_shift" [T]
    int32 (`hue_steps`) per frame. Applied by `apply_color_params` on the host
    or by `vifi_jax.train.augment` on the accelerator, with the same result."""
    params = identity_color_params(num_frames)
    params["flip"] = np.bool_(rng.random() < flip_prob)
    params["jitter"] = np.bool_(rng.random() < color_jitter_prob)
    if params["jitter"]:
        for t in range(num_frames):
            params["order"][t], params["factors"][t], params["hue_shift"][t] = draw_jitter(rng)
    params["gray"] = np.bool_(rng.random() < grayscale_prob)
    return params


COLOR_PARAMS = ("flip", "jitter", "gray", "order", "factors", "hue_shift")


def identity_color_params(num_frames):
    """Parameters that leave a clip as it is (what a sample that could not be read carries)."""
    return {"flip": np.bool_(False), "jitter": np.bool_(False), "gray": np.bool_(False),
            "order": np.tile(np.arange(4, dtype=np.int32), (num_frames, 1)),
            "factors": np.ones((num_frames, 3), np.float32), "hue_shift": np.zeros(num_frames, np.int32)}


def apply_color_params(frames, params):
    """Flip, per-frame colour jitter and grayscale of one clip with drawn parameters, on the host."""
    if params["flip"]:
        frames = frames[:, :, ::-1]
    if params["jitter"]:
        frames = np.stack([jitter_frame(*frame_params) for frame_params in
                           zip(frames, params["order"], params["factors"], params["hue_shift"])])
    if params["gray"]:
        frames = grayscale(frames)
    return np.ascontiguousarray(frames)


def test_transform(frames, size=224, num_crops=1):
    """Test views [num_crops, T, size, size, 3]: centre crop after short side 256/224*size, or three crops."""
    if num_crops == 1:
        frames = resize_short_side(frames, int(256 / 224 * size))
        return crop(frames, center_crop_box(frames.shape[1], frames.shape[2], size))[None]
    if num_crops == 3:
        frames = resize_short_side(frames, size)
        return np.stack([crop(frames, box) for box in three_crop_boxes(frames.shape[1], frames.shape[2], size)])
    raise ValueError(f"num_crops must be 1 or 3 (the official test pipelines), got {num_crops}")


def normalize(frames, kind="imagenet"):
    """float32 (x - mean) / std on 0-255 RGB values; kind is "imagenet" (official) or "clip".

    Works on numpy arrays (host) and jax arrays (training and evaluation normalise uint8 on the device)."""
    mean, std = NORMALIZATIONS[kind]
    return (frames.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
