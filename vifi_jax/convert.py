"""Convert checkpoints between PyTorch and vifi_jax (the conversion itself: `vifi_jax.weights.convert`).

    python -m vifi_jax.convert SRC DST [--clip_weights W] [--layout openai|vifi] [--dtype float32|float16]
        [--overwrite] [--verbose]

SRC: OpenAI CLIP `.pt` (TorchScript) or state dict, official ViFi-CLIP `.pth`
(regular or prompting), `.safetensors`, a vifi_jax directory or `openai:ViT-B/16`.
DST: a directory (vifi_jax checkpoint), a `.pth`/`.pt` file in `--layout`, or a `.safetensors` file
(OpenAI names). An existing destination is replaced only with --overwrite, and a directory that is not a
vifi_jax model never.
"""
import logging

from absl import app, flags

from data_pipelines import cli
from vifi_jax.cli import flags as cli_flags

FLAGS = flags.FLAGS


def define_flags():
    if "layout" in FLAGS:  # defined already (run() called again in one process)
        return
    cli_flags.clip_weights()
    cli_flags.alias("clip-weights", "clip_weights")  # the earlier spelling
    flags.DEFINE_enum("layout", "vifi", ["openai", "vifi"], "Layout of a .pth/.pt destination.")
    cli_flags.dtype("dtype of a .pth/.pt destination.")
    cli_flags.overwrite("Replace an existing destination file or model.")


def main(argv):
    if len(argv) != 3:
        raise app.UsageError("give SRC and DST")
    cli.configure_logging(logging.WARNING)  # Orbax's INFO lines stay out; our warnings (leftovers removed) show
    from vifi_jax.weights import convert
    print(convert.convert(argv[1], argv[2], FLAGS.clip_weights, FLAGS.layout, FLAGS.dtype, FLAGS.overwrite))
    return 0


def run(argv):
    """`python -m vifi_jax.convert` in this process (for tests and scripts): argv holds SRC, DST and flags."""
    define_flags()
    cli.verbose_flag()
    FLAGS.unparse_flags()
    remaining = cli.parse(["convert", *map(str, argv)])
    return cli.guarded(main, lambda: FLAGS.verbose)(remaining)


if __name__ == "__main__":
    define_flags()
    cli.run(main, positional=True)
