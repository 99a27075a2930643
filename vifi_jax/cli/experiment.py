"""The experiment config flag that `main` and `aot` share: a shipped config by name or a config file, with
its argument after ':' and --config.key=value overrides (ml_collections), found without rewriting sys.argv."""
import ast
import os

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def shipped_configs():
    return sorted(name[:-3] for name in os.listdir(CONFIGS_DIR)
                  if name.endswith(".py") and name not in ("__init__.py", "common.py"))


def configs_help():
    """Each shipped config's docstring (its arguments and examples), read without importing it."""
    parts = []
    for name in shipped_configs():
        with open(os.path.join(CONFIGS_DIR, name + ".py")) as f:
            doc = ast.get_docstring(ast.parse(f.read()), clean=False) or ""
        parts.append(f"  {name}: {doc}".replace("\n", "\n    "))
    return "\n\n".join(parts).replace("\n    \n", "\n\n")


def define():
    """The --config flag (once per process)."""
    if "config" not in FLAGS:
        config_flags.DEFINE_config_file(
            "config", None, "Experiment config: a shipped config's name or a file, with its argument after ':', "
            "e.g. zeroshot, few_shot:dataset=hmdb51,shots=2 or configs/base2novel.py:dataset=ucf101,split=2.",
            lock_config=True)


def config_path(argument):
    """`zeroshot` or `few_shot:dataset=hmdb51,shots=2` -> the config file shipped with vifi_jax (argument kept);
    a path (`configs/zeroshot.py:dataset=hmdb51`) stays as it is."""
    name, colon, arg = argument.partition(":")
    if os.sep in name or "/" in name or name.endswith(".py"):
        return argument
    if name not in shipped_configs():
        raise app.UsageError(f"--config={argument}: no shipped config {name!r}; give a file path or one of "
                             f"{', '.join(shipped_configs())}")
    return os.path.join(CONFIGS_DIR, name + ".py") + colon + arg


def recipe_name(argument):
    """`zeroshot:train` or `/.../configs/zeroshot.py:train` -> `zeroshot:train`, how the fit table
    (`benchmarks/aot_table.py`) and aot reports name a shipped recipe; None for a config file outside CONFIGS_DIR."""
    path, colon, arg = config_path(argument).partition(":")
    if os.path.dirname(os.path.abspath(path)) != CONFIGS_DIR:
        return None
    return os.path.splitext(os.path.basename(path))[0] + colon + arg


def resolve_config(argument):
    """The --config flag's value as a file (absl parses the flags with this applied; sys.argv stays as given)."""
    if argument.startswith("--config="):
        return "--config=" + config_path(argument[len("--config="):])
    return argument


def config_argument():
    """The --config value as given on the command line (file and argument), e.g. for naming a workdir."""
    return config_flags.get_config_filename(FLAGS["config"])


def required():
    """The parsed experiment config, or a usage error when --config was not given."""
    if FLAGS.config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/zeroshot.py")
    return FLAGS.config
