"""Every official setting builds; smoke variants covering each training path (both towers, image, text,
prompts; one or two eval sets; accumulation; multi-view final evaluation) run a real train step."""
import pytest

from configs import base2novel, common, few_shot, fully_supervised, retrieval, zeroshot
from vifi_jax.evaluators import job
from vifi_jax.train import loop

FULL = [(zeroshot, a) for a in ("", "train", "train,use=image", "train,use=text", "dataset=hmdb51", "dataset=ucf101",
                                 "dataset=k600", "hmdb")]
FULL += [(base2novel, f"dataset={d},split={s}{p}") for d in base2novel.DATASETS for s in (1, 2, 3)
         for p in ("", ",prompting")]
FULL += [(few_shot, f"dataset={d},shots={k}{p}") for d in few_shot.DATASETS for k in (2, 4, 8, 16)
         for p in ("", ",prompting")]
FULL += [(fully_supervised, a) for a in ("", "use=image", "use=text")] + [(retrieval, "")]
FULL += [(base2novel, "dataset=ucf101,use=image"), (base2novel, "dataset=ucf"), (few_shot, "dataset=hmdb"),
         (few_shot, "dataset=ssv2,shots=8,use=text")]

SMOKE_TRAIN = [(zeroshot, "train,use=image,smoke"), (base2novel, "dataset=ssv2,split=2,smoke"),
               (few_shot, "dataset=ssv2,shots=16,prompting,smoke"), (fully_supervised, "use=text,smoke")]
SMOKE_EVAL = [(zeroshot, "smoke"), (zeroshot, "dataset=k600,smoke")]


def name(param):
    return f"{param[0].__name__.split('.')[-1]}:{param[1]}"


@pytest.mark.parametrize("module,arg", FULL, ids=map(name, FULL))
def test_official_configs_build(module, arg):
    c = module.get_config(arg)
    assert c.mode in ("train", "eval", "zeroshot", "retrieval") and c.eval.sets
    c_smoke = module.get_config(f"{arg},smoke" if arg else "smoke")
    assert c_smoke.model.init.startswith("random:") and c_smoke.data.source == "demo"
    assert c_smoke.train.use == c.train.use and c_smoke.text_mode == c.text_mode


def test_settings_follow_the_reference_table():
    zs = zeroshot.get_config("train")
    assert (zs.data.num_frames, zs.train.epochs, zs.train.lr, zs.train.batch_size * zs.train.accumulation_steps) == \
        (32, 10, 8e-6, 256)
    fs = fully_supervised.get_config()
    assert (fs.data.num_frames, fs.train.lr, fs.train.batch_size * fs.train.accumulation_steps) == (16, 2.2e-5, 512)
    assert (fs.eval.final_num_clips, fs.eval.final_num_crops) == (4, 3)
    b2n = base2novel.get_config("dataset=ucf101,split=3,prompting")
    assert (b2n.model.text_prompts, b2n.model.vision_prompt_depth, b2n.train.lr, b2n.train.use, b2n.train.epochs) == \
        (16, 9, 4e-2, "prompts", 11)
    assert b2n.data.train_file.endswith("ucf_splits/fs_base_s3_train.txt") and set(b2n.eval.sets) == {"base", "novel"}
    few = few_shot.get_config("dataset=ssv2,shots=8,prompting")
    assert (few.model.vision_prompts, few.model.text_prompt_depth, few.train.lr, few.train.epochs) == (10, 12, 8e-3, 50)
    k600 = zeroshot.get_config("dataset=k600")
    assert k600.eval.sets.split2.labels == "labels/ZS_split2_K600.csv"
    assert zeroshot.get_config("hmdb").eval.sets.to_dict() == zeroshot.get_config("dataset=hmdb51").eval.sets.to_dict()
    old_spelling = base2novel.get_config("dataset=hmdb").data.to_dict()
    assert old_spelling == base2novel.get_config("dataset=hmdb51").data.to_dict()
    with pytest.raises(ValueError, match="this config offers hmdb51, ucf101, ssv2"):
        few_shot.get_config("dataset=k600")
    for c in (zs, fs, b2n, few):
        assert (c.train.weight_decay, c.train.b2, c.train.label_smoothing, c.train.mixup_alpha) == (1e-3, 0.98, 0.1, 0.8)
    assert base2novel.get_config("dataset=k400,use=text").train.use == "text"
    assert few_shot.get_config("dataset=hmdb51,use=image").train.use == "image"
    with pytest.raises(ValueError, match="prompting trains only the prompts"):
        few_shot.get_config("prompting,use=image")
    assert zs.train.reference_world_size == 8 and zs.text_mode == "auto" and b2n.text_mode == "auto"
    with pytest.raises(ValueError, match="unknown config argument"):
        few_shot.get_config("dataset=ssv2,shot=8")
    with pytest.raises(ValueError, match="shots must be 2, 4, 8 or 16"):
        few_shot.get_config("shots=3")
    assert common.parse_arg("a=3,b", a=1, b=False, c="x").to_dict() == {"a": 3, "b": True, "c": "x"}


@pytest.mark.parametrize("module,arg", SMOKE_TRAIN, ids=map(name, SMOKE_TRAIN))
def test_smoke_config_trains_one_step(module, arg, tmp_path):
    c = module.get_config(arg)
    c.train.max_steps = 1
    results = loop.train_and_evaluate(c, str(tmp_path))
    assert len(results["history"]) == 1 and results["history"][0]["lr"] == 0.0  # the first update uses lr 0
    assert all(m["evaluated"] == m["videos"] for m in results["final"].values())
    if set(results["final"]) == {"base", "novel"}:
        assert set(results["summary"]) == {"harmonic_mean"}


@pytest.mark.parametrize("module,arg", SMOKE_EVAL, ids=map(name, SMOKE_EVAL))
def test_smoke_config_evaluates(module, arg, tmp_path):
    results = job.run(module.get_config(arg), str(tmp_path))
    assert results["final"] and all(0 <= m["top1"] <= 100 for m in results["final"].values())
    if len(results["final"]) == 3:
        assert set(results["summary"]) == {"top1_mean", "top1_std", "std"}
