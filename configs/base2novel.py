"""Base-to-novel generalisation: train on 16-shot base classes, evaluate base and novel classes.

    --config=configs/base2novel.py:dataset=hmdb51,split=1          fine-tuning (from OpenAI CLIP), 11 epochs
    --config=configs/base2novel.py:dataset=ucf101,split=2,prompting   bridge-and-prompt from a K400 checkpoint
    --config=configs/base2novel.py:dataset=hmdb51,use=image           CLIP image-FT (use=text: text-FT)
    datasets: k400, hmdb51, ucf101, ssv2 (hmdb and ucf are accepted too); splits 1-3; append ,smoke for
    seconds on a CPU

Each run reports base and novel top-1 and their harmonic mean; the paper's numbers average base and
novel over splits 1-3 before the HM (`python -m vifi_jax.summarize base2novel RUN1 RUN2 RUN3`).
Prompting needs --config.model.init=<K400 ViFi-CLIP checkpoint> (and clip_weights for official .pth).
"""
from configs import common

DATASETS = {  # split dir, label prefix, base classes
    "k400": ("k400_splits", "kinetics_400", 200),
    "hmdb51": ("hmdb_splits", "hmdb_51", 26),
    "ucf101": ("ucf_splits", "ucf_101", 51),
    "ssv2": ("ssv2_splits", "ssv2_174", 87),
}


def get_config(arg=None):
    arg = common.parse_arg(arg, dataset="hmdb51", split=1, prompting=False, use="both", smoke=False)
    if arg.split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3, got {arg.split}")
    splits, labels, base_classes = DATASETS[common.dataset_name(arg.dataset, tuple(DATASETS))]
    c = common.base_config()
    c.data.train_file = f"datasets_splits/base2novel_splits/{splits}/fs_base_s{arg.split}_train.txt"
    c.data.labels = f"labels/{labels}_base_labels.csv"
    c.data.num_classes = base_classes
    c.train.epochs = 11
    c.train.accumulation_steps = 2  # 32 x 2 = 64
    c.train.lr = 2e-6
    c.eval.every_epochs = 10
    c.eval.sets = {
        "base": common.eval_set(f"datasets_splits/base2novel_splits/{splits}/base_val.txt",
                                f"labels/{labels}_base_labels.csv"),
        "novel": common.eval_set(f"datasets_splits/base2novel_splits/{splits}/novel_val.txt",
                                 f"labels/{labels}_novel_labels.csv"),
    }
    return common.finish(c, arg, num_prompts=16, depth=9, prompt_lr=4e-2)
