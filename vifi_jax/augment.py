"""Flip, colour jitter and grayscale of training clips inside the jitted step, with the host's draws.

The loader still draws every random choice with the sample's own generator (`transforms.draw_color_params`,
the same draws in the same order as the host path), so runs reproduce and resume exactly as before; only
the arithmetic moves to the accelerator, on the uint8 crops the host already ships. Each op mirrors
`data_pipelines.transforms` (the reference) step by step in float32 and truncates to uint8 where it does:
- flip, brightness: the same pixels;
- contrast, saturation, grayscale: the same pixels unless a float32 sum lands on the other side of a
  rounding edge (the mean luma is summed in another order here), then 1 LSB;
- hue: RGB -> 8-bit HSV is OpenCV's integer arithmetic (the same on all 2^24 colours); HSV -> RGB follows
  OpenCV's float formula (hue step 6/255 a sector, as OpenCV's HSV_FULL uses), 1 LSB off OpenCV on 88 of the
  2^24 HSV triples.
tests/test_augment.py measures each op against the reference.
"""
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import transforms

_HSV_SHIFT = 12
# value x weight for every uint8 value and channel, as numpy rounds each product: summing looked-up products
# keeps XLA from fusing multiply and add into one FMA (a different rounding), so luma matches the host's.
_LUMA_PRODUCTS = np.arange(256, dtype=np.float32)[:, None] * transforms.LUMA


def _to_uint8_values(x):
    """uint8(clip(x, 0, 255)) as numpy casts it (truncation), kept in float32."""
    return jnp.floor(jnp.clip(x, 0.0, 255.0))


def _gray(frame):
    """0.299 r + 0.587 g + 0.114 b of uint8 values, summed left to right as numpy's `frame @ transforms.LUMA`."""
    products = jnp.asarray(_LUMA_PRODUCTS)[frame.astype(jnp.int32), jnp.arange(3)]
    return (products[..., 0] + products[..., 1]) + products[..., 2]


def _linear(frame, op, factor):
    """Brightness (op 0), contrast (1) or saturation (2) as the one form they share on the host:
    uint8(clip(m + factor · (x − m))) with m = 0, the rounded mean luma, or each pixel's rounded luma."""
    gray = _gray(frame)
    centre = jnp.select([op == 1, op == 2], [jnp.floor(jnp.mean(gray) + 0.5), jnp.round(gray)], 0.0)[..., None]
    return _to_uint8_values(centre + factor * (frame - centre))


def brightness(frame, factor):
    return _linear(frame, 0, factor)


def contrast(frame, factor):
    return _linear(frame, 1, factor)


def saturation(frame, factor):
    return _linear(frame, 2, factor)


def _division_tables():
    """OpenCV's RGB -> HSV fixed-point reciprocals: round(255·2^12 / i) and round(256·2^12 / (6i))."""
    i = np.maximum(np.arange(256, dtype=np.float64), 1)
    saturation_table = np.rint((255 << _HSV_SHIFT) / i).astype(np.int32)
    hue_table = np.rint((256 << _HSV_SHIFT) / (6 * i)).astype(np.int32)
    saturation_table[0] = hue_table[0] = 0
    return saturation_table, hue_table


_SATURATION_TABLE, _HUE_TABLE = _division_tables()


def rgb_to_hsv(frame):
    """uint8-valued RGB (any integer dtype) -> int32 H, S, V as cv2.COLOR_RGB2HSV_FULL gives them."""
    r, g, b = (frame[..., c].astype(jnp.int32) for c in range(3))
    v = jnp.maximum(jnp.maximum(r, g), b)
    diff = v - jnp.minimum(jnp.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * jnp.asarray(_SATURATION_TABLE)[v] + half) >> _HSV_SHIFT
    h = jnp.where(v == r, g - b, jnp.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * jnp.asarray(_HUE_TABLE)[diff] + half) >> _HSV_SHIFT
    h = jnp.clip(jnp.where(h < 0, h + 256, h), 0, 255)
    return h, s, v


def hsv_to_rgb(h, s, v):
    """8-bit H, S, V -> float32 RGB values 0-255 as cv2.COLOR_HSV2RGB_FULL (within 1 LSB)."""
    one = jnp.float32(1.0)
    s = s.astype(jnp.float32) * jnp.float32(1 / 255)
    v = v.astype(jnp.float32) * jnp.float32(1 / 255)
    h = h.astype(jnp.float32) * jnp.float32(6 / 255)
    sector = jnp.floor(h)
    h = h - sector
    sector = jnp.mod(sector, 6.0)
    p, q, t = v * (one - s), v * (one - s * h), v * (one - s * (one - h))
    r = jnp.select([sector == 0, sector == 1, sector <= 3, sector == 4], [v, q, p, t], v)
    g = jnp.select([sector == 0, sector <= 2, sector == 3], [t, v, q], p)
    b = jnp.select([sector <= 1, sector == 2, sector <= 4], [p, t, v], q)
    return jnp.clip(jnp.round(jnp.stack([r, g, b], -1) * 255.0), 0.0, 255.0)


def hue(frame, steps):
    """Add `steps` to the 8-bit hue, wrapping (transforms.shift_hue)."""
    h, s, v = rgb_to_hsv(frame)
    return hsv_to_rgb((h + steps) % 256, s, v)


def grayscale(frames):
    gray = jnp.clip(jnp.round(_gray(frames)), 0.0, 255.0)
    return jnp.broadcast_to(gray[..., None], frames.shape)


def jitter_frame(frame, order, factors, hue_steps):
    """The four ops in the frame's drawn order. Under vmap every branch is computed, so the order is walked
    in two passes around the one hue shift: the linear ops drawn before it (positions 0-2), the hue, the
    linear ops drawn after it (positions 1-3): six linear ops and one hue instead of sixteen ops."""
    hue_position = jnp.argmax(order == 3)
    factors = jnp.concatenate([factors, jnp.ones(1, factors.dtype)])
    for position in range(3):
        op = order[position]
        frame = jnp.where(position < hue_position, _linear(frame, op, factors[op]), frame)
    frame = hue(frame, hue_steps)
    for position in range(1, 4):
        op = order[position]
        frame = jnp.where(position > hue_position, _linear(frame, op, factors[op]), frame)
    return frame


def augment_clip(frames, params):
    """One clip [T, H, W, 3] uint8 and its drawn parameters -> float32 frames with uint8 values."""
    x = frames.astype(jnp.float32)
    x = jnp.where(params["flip"], x[:, :, ::-1], x)
    jittered = jax.vmap(jitter_frame)(x, params["order"], params["factors"], params["hue_shift"])
    x = jnp.where(params["jitter"], jittered, x)
    return jnp.where(params["gray"], grayscale(x), x)


def augment(frames, params):
    """A batch [B, T, H, W, 3] uint8 with parameters per sample (leading axis B) -> float32 uint8 values."""
    return jax.vmap(augment_clip)(frames, {k: params[k] for k in transforms.COLOR_PARAMS})
