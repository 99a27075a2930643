"""Fully supervised Kinetics-400: 16 frames, 30 epochs; final evaluation with 4 clips x 3 crops.

    --config=configs/fully_supervised.py              ViFi-CLIP (both towers), LR 2.2e-5, batch 512
    --config=configs/fully_supervised.py:use=image    CLIP image-FT (use=text: text-FT), LR 8e-6, batch 256
    append ,smoke for seconds on a CPU
"""
from configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, use="both", smoke=False)
    c = common.base_config()
    c.data.num_frames = 16
    c.data.train_file, c.data.labels = "datasets_splits/k400_splits/train.txt", "labels/kinetics_400_labels.csv"
    c.data.num_classes = 400
    c.train.use = arg.use
    if arg.use == "both":
        c.train.lr, c.train.accumulation_steps = 2.2e-5, 16  # 32 x 16 = 512
    else:
        c.train.lr, c.train.accumulation_steps = 8e-6, 8  # 32 x 8 = 256
    c.eval.sets = {"val": common.eval_set("datasets_splits/k400_splits/val.txt", "labels/kinetics_400_labels.csv")}
    c.eval.final_num_clips, c.eval.final_num_crops = 4, 3
    if arg.smoke:
        common.smoke(c)
    return c
