"""Few-shot: K = 2, 4, 8, 16 shots of HMDB-51, UCF-101 or SSv2, evaluated on the full validation split.

    --config=configs/few_shot.py:dataset=hmdb51,shots=2              fine-tuning from OpenAI CLIP, 50 epochs
    --config=configs/few_shot.py:dataset=ssv2,shots=16,prompting     bridge-and-prompt (10/10 tokens, depth 12)
    --config=configs/few_shot.py:dataset=ucf101,shots=4,use=image    CLIP image-FT (use=text: text-FT)
    append ,smoke for seconds on a CPU (dataset=hmdb and ucf are accepted for hmdb51 and ucf101)
"""
from configs import common

DATASETS = {  # split dir, validation file, label csv, classes
    "hmdb51": ("hmdb_splits", "val1.txt", "hmdb_51_labels.csv", 51),
    "ucf101": ("ucf_splits", "val1.txt", "ucf_101_labels.csv", 101),
    "ssv2": ("ssv2_splits", "validation.txt", "ssv2_labels.csv", 174),
}


def get_config(arg=None):
    arg = common.parse_arg(arg, dataset="hmdb51", shots=2, prompting=False, use="both", smoke=False)
    if arg.shots not in (2, 4, 8, 16):
        raise ValueError(f"shots must be 2, 4, 8 or 16, got {arg.shots}")
    splits, val, labels, classes = DATASETS[common.dataset_name(arg.dataset, tuple(DATASETS))]
    c = common.base_config()
    c.data.train_file = f"datasets_splits/{splits}/train1_few_shot_{arg.shots}.txt"
    c.data.labels, c.data.num_classes = f"labels/{labels}", classes
    c.train.epochs, c.train.lr = 50, 2e-6
    c.train.accumulation_steps = 2  # 32 x 2 = 64
    c.eval.every_epochs = 10
    c.eval.sets = {"val": common.eval_set(f"datasets_splits/{splits}/{val}", f"labels/{labels}")}
    return common.finish(c, arg, num_prompts=10, depth=12, prompt_lr=8e-3)
