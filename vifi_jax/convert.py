"""Convert checkpoints between PyTorch and vifi_jax (the conversion itself: `vifi_jax.weights.convert`).

    python -m vifi_jax.convert SRC DST [--clip_weights W] [--layout openai|vifi] [--dtype float32|float16]
        [--overwrite] [--verbose]

SRC: OpenAI CLIP `.pt` (TorchScript) or state dict, official ViFi-CLIP `.pth`
(regular or prompting), `.safetensors`, a vifi_jax directory or `openai:ViT-B/16`.
DST: a directory (vifi_jax checkpoint), a `.pth`/`.pt` file in `--layout`, or a `.safetensors` file
(OpenAI names). An existing destination is replaced only with --overwrite, and a directory that is not a
vifi_jax model never.
"""
import argparse
import sys

from data_pipelines import cli
from vifi_jax.weights import convert


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vifi_jax.convert", description=__doc__.split("\n")[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--clip_weights", "--clip-weights", dest="clip_weights",  # the second: an earlier spelling
                        help="OpenAI CLIP weights for the token embedding of ViFi-CLIP files")
    parser.add_argument("--layout", choices=convert.LAYOUTS, default="vifi", help="layout of a .pth/.pt destination")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="dtype of a .pth/.pt destination")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing destination file or model")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    args = parser.parse_args(argv)
    try:
        print(convert.convert(args.src, args.dst, args.clip_weights, args.layout, args.dtype, args.overwrite))
    except Exception as error:  # noqa: BLE001 - every failure becomes one line (see vifi_jax.cli)
        cli.fail(error, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
