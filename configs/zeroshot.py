"""Zero-shot: K400 training, and evaluation on HMDB-51, UCF-101 and K600 (three splits, mean ± std).

    --config=configs/zeroshot.py                      offline demo: generated clips, openai:ViT-B/16 if cached
    --config=configs/zeroshot.py:dataset=hmdb51       zero-shot eval, splits 1-3 (also ucf101, k600)
    --config=configs/zeroshot.py:train                ViFi-CLIP K400 training, 32 frames, 10 epochs
    --config=configs/zeroshot.py:train,use=image      CLIP image-FT (use=text: text-FT)
    append ,smoke for a tiny random model on generated clips (seconds on a CPU)

Evaluation loads --config.model.init (the K400 checkpoint; vanilla CLIP with --config.text_mode=bare).
The bare words hmdb, ucf and k600 still work for dataset=hmdb51, ucf101 and k600.
"""
from configs import common

EVAL_SETS = {  # list file, label csv of split s
    "hmdb51": ("hmdb_splits/val{}.txt", "hmdb_51_labels.csv"),
    "ucf101": ("ucf_splits/val{}.txt", "ucf_101_labels.csv"),
    "k600": ("k600_splits/ZS_split{}_K600_eval.txt", "ZS_split{}_K600.csv"),
}


def get_config(arg=None):
    arg = common.parse_arg(arg, dataset="", train=False, use="both", smoke=False, hmdb=False, ucf=False, k600=False)
    old = [name for name in ("hmdb", "ucf", "k600") if arg[name]]
    if len(old) + bool(arg.dataset) > 1:
        raise ValueError("pick one dataset per run (dataset=hmdb51, ucf101 or k600)")
    dataset = common.dataset_name(arg.dataset or old[0], tuple(EVAL_SETS)) if arg.dataset or old else ""
    c = common.base_config()
    if arg.train:
        if dataset:
            raise ValueError("train fine-tunes on K400; dataset= picks a zero-shot evaluation")
        c.data.train_file, c.data.labels = "datasets_splits/k400_splits/train.txt", "labels/kinetics_400_labels.csv"
        c.data.num_classes = 400
        c.train.use = arg.use
        c.train.epochs = 10
        c.train.accumulation_steps = 8  # 32 x 8 = 256
        c.eval.sets = {"val": common.eval_set("datasets_splits/k400_splits/val.txt", "labels/kinetics_400_labels.csv")}
    else:
        c.mode = "zeroshot"
        if dataset:
            list_file, labels = EVAL_SETS[dataset]
            c.eval.sets = {f"split{s}": common.eval_set(f"datasets_splits/{list_file.format(s)}",
                                                        f"labels/{labels.format(s)}") for s in (1, 2, 3)}
        else:  # the embedded default: runs offline on a fresh machine in a few CPU minutes
            c.data.source = "demo"
            c.data.num_frames = 8
            c.data.num_workers = 2
            c.model.allow_random_init = True
            c.eval.sets = {"demo": common.eval_set("", "")}
    if arg.smoke:
        common.smoke(c)
    return c
