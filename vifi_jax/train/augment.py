"""Flip, colour jitter and grayscale of training clips inside the jitted step, with the host's draws.

The loader still draws every random choice with the sample's own generator (`transforms.draw_color_params`,
the same draws in the same order as the host path), so runs reproduce and resume exactly as before; only
the arithmetic moves to the accelerator, on the uint8 crops the host already ships. Each op mirrors
`data_pipelines.transforms` (the reference) step by step and truncates to uint8 where it does:
- flip, grayscale: the same pixels (luma is PIL's integer fixed point, exact everywhere);
- brightness, contrast, saturation: PIL's blend m + f·(x − m) in float32 with integer m (0, the rounded mean
  luma, each pixel's luma): the same pixels unless a compiler contracts the multiply-add into one FMA,
  which can move a value lying on a rounding edge by 1 LSB;
- hue: RGB -> 8-bit HSV is OpenCV's integer arithmetic (the same on all 2^24 colours); HSV -> RGB follows
  OpenCV's float formula (hue step 6/255 a sector, as OpenCV's HSV_FULL uses), 1 LSB off OpenCV on 88 of the
  2^24 HSV triples.
Only elementwise arithmetic, selects, one reverse and per-frame sums: no table lookups or other gathers,
which TPUs run per element at a fraction of their vector rate. tests/test_augment.py measures each op.
"""
import jax
import jax.numpy as jnp

from data_pipelines import transforms

_HSV_SHIFT = 12


def _to_uint8_values(x):
    """uint8(clip(x, 0, 255)) as numpy casts it (truncation), kept in float32."""
    return jnp.floor(jnp.clip(x, 0.0, 255.0))


def luma(frames):
    """PIL's 8-bit luma (`transforms.luma`) of uint8-valued RGB (any real or integer dtype) as int32."""
    x = frames.astype(jnp.int32)
    w = transforms.LUMA_WEIGHTS
    return (x[..., 0] * w[0] + x[..., 1] * w[1] + x[..., 2] * w[2] + 32768) >> 16


LINEAR_OPS = ("brightness", "contrast", "saturation")  # `adjust`'s op numbers, as the drawn order numbers them


def adjust(frame, op, factor):
    """Brightness (op 0), contrast (1) or saturation (2) as the one form they share on the host:
    uint8(clip(m + factor · (x − m))) with m = 0, the frame's rounded mean luma, or each pixel's luma."""
    gray = luma(frame)
    n = gray.size
    mean = (2 * jnp.sum(gray) + n) // (2 * n)  # transforms.rounded_mean, exact in int32 up to 4M pixels
    centre = jnp.select([op == 1, op == 2], [mean.astype(jnp.float32), gray.astype(jnp.float32)], 0.0)[..., None]
    return _to_uint8_values(centre + factor * (frame - centre))


def _rounded_quotient(numerator, divisor):
    """round(numerator / divisor) with ties to even (OpenCV's cvRound of its table entries) for int32
    divisors >= 0, 0 where the divisor is 0; integer arithmetic in place of OpenCV's 256-entry tables."""
    safe = jnp.maximum(divisor, 1)
    quotient, remainder = numerator // safe, numerator % safe
    up = (2 * remainder > safe) | ((2 * remainder == safe) & (quotient % 2 == 1))
    return jnp.where(divisor > 0, quotient + up.astype(jnp.int32), 0)


def rgb_to_hsv(frame):
    """uint8-valued RGB (any integer dtype) -> int32 H, S, V as cv2.COLOR_RGB2HSV_FULL gives them."""
    r, g, b = (frame[..., c].astype(jnp.int32) for c in range(3))
    v = jnp.maximum(jnp.maximum(r, g), b)
    diff = v - jnp.minimum(jnp.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * _rounded_quotient(255 << _HSV_SHIFT, v) + half) >> _HSV_SHIFT
    h = jnp.where(v == r, g - b, jnp.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _rounded_quotient(256 << _HSV_SHIFT, 6 * diff) + half) >> _HSV_SHIFT
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
    return jnp.broadcast_to(luma(frames).astype(jnp.float32)[..., None], frames.shape)


def jitter_frame(frame, order, factors, hue_steps):
    """The four ops in the frame's drawn order. Under vmap every branch is computed, so the order is walked
    in two passes around the one hue shift: the linear ops drawn before it (positions 0-2), the hue, the
    linear ops drawn after it (positions 1-3): six linear ops and one hue instead of sixteen ops."""
    hue_position = jnp.argmax(order == 3)
    factors = jnp.concatenate([factors, jnp.ones(1, factors.dtype)])

    def factor_of(op):  # factors[op] as a select: no gather, even under vmap
        return jnp.sum(jnp.where(jnp.arange(4) == op, factors, 0.0))

    for position in range(3):
        op = order[position]
        frame = jnp.where(position < hue_position, adjust(frame, op, factor_of(op)), frame)
    frame = hue(frame, hue_steps)
    for position in range(1, 4):
        op = order[position]
        frame = jnp.where(position > hue_position, adjust(frame, op, factor_of(op)), frame)
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
