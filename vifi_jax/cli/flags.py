"""Flags the command-line tools share, each defined once, with one default and one meaning.

A tool calls the definers it takes; defining a flag a second time in the same process (two tools imported
by one program or test) is a no-op, so the tools can be used side by side. Earlier spellings stay accepted
as aliases and are named as such in --help.
"""
from absl import flags

from data_pipelines import cli

FLAGS = flags.FLAGS
flags.disclaim_key_flags()  # the flags defined here are the calling tool's: its --help lists them
DEFAULT_WEIGHTS = "openai:ViT-B/16"


_define = cli.define_flag


def alias(old, name):
    """Accept `--old` as an earlier spelling of `--name`."""
    if old not in FLAGS:
        flags.DEFINE_alias(old, name)


def weights(default=DEFAULT_WEIGHTS, help_text="Model weights: anything vifi_jax.load accepts (a vifi_jax "
            "model directory, an OpenAI CLIP .pt, an official ViFi-CLIP .pth, a .safetensors file, openai:ViT-B/16)."):
    _define("string", "weights", default, help_text)
    clip_weights()


def clip_weights():
    _define("string", "clip_weights", None, "OpenAI CLIP weights that official ViFi-CLIP .pth files take their token "
            "embedding from.")


def labels():
    """Class names as comma-separated words (--labels) or a label CSV (--labels_file)."""
    _define("string", "labels", None, "Comma-separated class names.")
    labels_file()


labels_file = cli.labels_file_flag
list_file = cli.list_file_flags


def overwrite(help_text):
    _define("bool", "overwrite", False, help_text)


def dtype(help_text):
    _define("enum", "dtype", "float32", help_text, enum_values=["float32", "float16"])


def num_frames(help_text="Frames sampled per video: the centres of this many equal segments (TSN)."):
    from data_pipelines import sampling
    _define("integer", "num_frames", sampling.NUM_FRAMES, help_text, lower_bound=1)


def out(default=None, help_text="Output directory (created)."):
    _define("string", "out", default, help_text)


def top_k():
    _define("integer", "top_k", 5, "How many results to show.", lower_bound=1)


def json_output(help_text="Print JSON instead of a table."):
    _define("bool", "json", False, help_text)


def features():
    _define("string", "features", None, "Feature directory written by `python -m vifi_jax.extract` (video level).")


def features_directory():
    """The --features directory (required), with the quiet logging of a tool that prints results."""
    import logging
    from absl import app
    from data_pipelines import cli
    cli.configure_logging(logging.WARNING)
    if not FLAGS.features:
        raise app.UsageError("--features is required")
    return FLAGS.features


def processes():
    """The flags of `runtime.sharding.join_processes`, for programs that can run as one job of several."""
    _define("bool", "distributed", False, "One process per host: join the others first (jax.distributed). On TPU "
            "pods, SLURM and Open MPI the job is detected; elsewhere give the three flags below.")
    _define("string", "coordinator_address", None, "HOST:PORT of process 0, reachable from every process "
            "(implies --distributed).")
    _define("integer", "num_processes", None, "How many processes form the job.")
    _define("integer", "process_id", None, "This process's index, 0 .. num_processes - 1.")
    _define("integer", "heartbeat_timeout", 100, "Seconds without a sign of life after which the other processes "
            "stop with an error instead of waiting for a dead one.")


def join_processes():
    """Join the job the `processes` flags describe (nothing without --distributed or an address)."""
    if FLAGS.distributed or FLAGS.coordinator_address:
        from vifi_jax.runtime import sharding
        sharding.join_processes(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                FLAGS.heartbeat_timeout)


def label_names(at_least=1):
    """The class names --labels or --labels_file give (exactly one of them; each name once)."""
    from absl import app
    from data_pipelines import datasets
    if bool(FLAGS.labels) == bool(FLAGS.labels_file):
        raise app.UsageError("give exactly one of --labels or --labels_file")
    names = datasets.read_labels(FLAGS.labels_file) if FLAGS.labels_file else \
        [n.strip() for n in FLAGS.labels.split(",") if n.strip()]
    if len(names) != len(set(names)):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise app.UsageError(f"the labels name {', '.join(map(repr, repeated))} more than once; give each class once")
    if len(names) < at_least:
        raise app.UsageError(f"give at least {at_least} labels to choose between")
    return names
