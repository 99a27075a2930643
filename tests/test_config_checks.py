"""Experiment configs: every unusable value fails at start-up, naming its field."""
import pytest

from configs import base2novel, few_shot, fully_supervised, retrieval, zeroshot
from vifi_jax.evaluators import job
from vifi_jax.runtime import config_checks
from vifi_jax.train import loop


@pytest.mark.parametrize("config", [zeroshot.get_config(""), zeroshot.get_config("train"),
                                    base2novel.get_config("prompting"), few_shot.get_config("smoke"),
                                    fully_supervised.get_config(""), retrieval.get_config("")],
                         ids=["zs", "zs_train", "b2n", "fs", "sup", "retrieval"])
def test_the_shipped_configs_pass(config):
    config_checks.check(config)


@pytest.mark.parametrize("field,value", [
    ("train.lr", -1e-5), ("train.batch_size", 0), ("train.accumulation_steps", 0), ("log_every", 0),
    ("eval.every_epochs", 0), ("checkpoint.every_steps", -1), ("eval.batch_size", 0), ("data.num_frames", 0),
    ("data.input_size", -224), ("train.epochs", 0), ("data.max_bad_fraction", 1.5), ("data.max_bad_fraction", -0.1),
    ("train.use", "all"), ("text_mode", "ensemble"), ("model.dtype", "int8"), ("train.lr", float("nan"))])
def test_a_bad_value_is_named(field, value):
    config = zeroshot.get_config("train,smoke")
    section, _, key = field.rpartition(".")
    (config[section] if section else config)[key] = value
    with pytest.raises(config_checks.ConfigError, match=rf"{field}={value!r}".replace("(", r"\(").replace(")", r"\)")):
        config_checks.check(config)


def test_training_and_evaluation_check_before_any_work(tmp_path):
    config = zeroshot.get_config("train,smoke")
    config.train.lr = -1.0
    with pytest.raises(config_checks.ConfigError, match="train.lr=-1.0"):
        loop.train_and_evaluate(config, str(tmp_path / "t"))
    config = zeroshot.get_config("smoke")
    config.data.num_frames = 0
    with pytest.raises(config_checks.ConfigError, match="data.num_frames=0"):
        job.run(config, str(tmp_path / "e"))
    assert not (tmp_path / "t").exists() and not (tmp_path / "e").exists()


def test_retrieval_mistakes_name_the_way_to_a_retrieval_config():
    old_mode = zeroshot.get_config("smoke")
    old_mode.mode = "retrieval"
    no_group = zeroshot.get_config("train,smoke")
    no_group.task = "retrieval"
    from_tfds = retrieval.get_config("train")
    from_tfds.data.source = "tfds"
    for config, expect in ((old_mode, "retrieval is a task now: --config=retrieval"),
                           (no_group, "no retrieval group; start from --config=retrieval"),
                           (from_tfds, "retrieval training reads caption files and their videos")):
        with pytest.raises(config_checks.ConfigError, match=expect):
            config_checks.check(config)
    retrieval_eval = retrieval.get_config("")
    retrieval_eval.retrieval.max_words = 78
    with pytest.raises(config_checks.ConfigError, match=r"retrieval.max_words=78: must be an integer in 3..77"):
        config_checks.check(retrieval_eval)
