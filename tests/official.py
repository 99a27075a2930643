"""The official ViFi-CLIP side of the tests: its module tree, its forward pass and its checkpoints.

`OfficialViFiCLIP` is the module tree of `trainers/vificlip.py:ViFiCLIP` (muzairkhattak/ViFi-CLIP @ e2d1948)
assembled from OpenAI's own `clip/model.py` modules, so `state_dict()` gives the official key names by torch
itself. Its forward pass follows the official code: prompts as in `clip/model.py`'s prompt hooks and
`VLPromptLearner`, frames folded into the batch, mean over time, exp(logit_scale)·cos.
`save_checkpoint` writes what `utils/tools.py:epoch_saving` writes: a DDP `module.` state dict, the state of a
real AdamW after one step, a timm-like scheduler state, and a real yacs config built as `utils/config.py` does.
"""
import numpy as np
import torch
from yacs.config import CfgNode

CTX_INIT = "a photo of a"


class OfficialViFiCLIP(torch.nn.Module):
    """ViFiCLIP's modules around an OpenAI CLIP `reference`; prompts = (n_vision, depth_vision, n_text, depth_text)."""

    def __init__(self, reference, class_names, tokenize, prompts=None, seed=0):
        super().__init__()
        self.prompt_learner = torch.nn.Module()
        self.image_encoder = reference.visual
        self.text_encoder = torch.nn.Module()
        self.text_encoder.transformer = reference.transformer
        self.text_encoder.positional_embedding = reference.positional_embedding
        self.text_encoder.ln_final = reference.ln_final
        self.text_encoder.text_projection = reference.text_projection
        self.logit_scale = reference.logit_scale
        self.n_vision = self.n_text = 0
        if prompts is None:
            texts = [f"{CTX_INIT} {name}." for name in class_names]
        else:
            self._add_prompts(reference, tokenize, *prompts, seed=seed)
            prefix = CTX_INIT if self.n_text <= 4 else " ".join(["X"] * self.n_text)
            texts = [f"{prefix} {name.replace('_', ' ')}." for name in class_names]
        self.tokenized_prompts = torch.from_numpy(np.asarray(tokenize(texts))).long()
        with torch.no_grad():
            embedding = reference.token_embedding(self.tokenized_prompts)
        if prompts is None:
            self.prompt_learner.register_buffer("complete_text_embeddings", embedding)
        else:
            self.prompt_learner.register_buffer("token_prefix", embedding[:, :1])
            self.prompt_learner.register_buffer("token_suffix", embedding[:, 1 + self.n_text:])

    def _add_prompts(self, reference, tokenize, n_vision, depth_vision, n_text, depth_text, seed):
        g = torch.Generator().manual_seed(seed)
        width_v, width_t = reference.visual.conv1.weight.shape[0], reference.ln_final.weight.shape[0]

        def draw(n, width):  # larger than the official N(0, 0.02) draw, so that wrong placement shows
            return torch.nn.Parameter(torch.randn(n, width, generator=g) * 0.5)

        self.n_vision, self.n_text = n_vision, n_text
        self.image_encoder.VPT = draw(n_vision, width_v)
        for i in range(1, depth_vision):
            self.image_encoder.transformer.resblocks[i].VPT_shallow = draw(n_vision, width_v)
        if n_text <= 4:  # VLPromptLearner: CTX_INIT's token embeddings
            ids = torch.from_numpy(np.asarray(tokenize(CTX_INIT))).long()
            with torch.no_grad():
                ctx = reference.token_embedding(ids)[0, 1:1 + n_text].clone()
            self.prompt_learner.ctx = torch.nn.Parameter(ctx + torch.randn(ctx.shape, generator=g) * 0.5)
        else:
            self.prompt_learner.ctx = draw(n_text, width_t)
        for i in range(1, depth_text):
            self.text_encoder.transformer.resblocks[i].VPT_shallow = draw(n_text, width_t)

    def encode_image(self, images):
        """images [N, 3, H, W]: VPT appended after the positional embedding, blocks i >= 1 swap the last n tokens."""
        visual = self.image_encoder
        x = visual.conv1(images)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding
        if self.n_vision:
            x = torch.cat([x, visual.VPT.expand(x.shape[0], -1, -1)], dim=1)
        x = visual.ln_pre(x).permute(1, 0, 2)
        for block in visual.transformer.resblocks:
            if hasattr(block, "VPT_shallow"):
                prompts = block.VPT_shallow.expand(x.shape[1], -1, -1).permute(1, 0, 2)
                x = torch.cat([x[:x.shape[0] - self.n_vision], prompts], dim=0)
            x = block(x)
        return visual.ln_post(x.permute(1, 0, 2)[:, 0]) @ visual.proj

    def encode_text(self):
        """The class texts: construct_prompts (ctx after SOS), blocks i >= 1 swap tokens 1..n, EOT pooling."""
        learner, encoder = self.prompt_learner, self.text_encoder
        if self.n_text:
            ctx = learner.ctx.expand(learner.token_prefix.shape[0], -1, -1)
            x = torch.cat([learner.token_prefix, ctx, learner.token_suffix], dim=1)
        else:
            x = learner.complete_text_embeddings
        x = (x + encoder.positional_embedding).permute(1, 0, 2)
        for block in encoder.transformer.resblocks:
            if hasattr(block, "VPT_shallow"):
                prompts = block.VPT_shallow.expand(x.shape[1], -1, -1).permute(1, 0, 2)
                x = torch.cat([x[:1], prompts, x[1 + self.n_text:]], dim=0)
            x = block(x)
        x = encoder.ln_final(x.permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), self.tokenized_prompts.argmax(dim=-1)] @ encoder.text_projection

    def forward(self, frames):
        """frames [B, T, H, W, 3] float (NHWC, normalised) -> logits [B, n_cls]."""
        b, t, h, w, c = frames.shape
        with torch.no_grad():
            images = torch.as_tensor(np.asarray(frames)).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
            video = self.encode_image(images).view(b, t, -1).mean(dim=1)
            text = self.encode_text()
            video = video / video.norm(dim=-1, keepdim=True)
            text = text / text.norm(dim=-1, keepdim=True)
            return (self.logit_scale.exp() * video @ text.t()).numpy()

    def probabilities(self, frames):
        return torch.softmax(torch.from_numpy(self(frames)), dim=-1).numpy()


class DistributedDataParallelKeys(torch.nn.Module):
    """What DDP's `state_dict()` looks like: every key under `module.`."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def yacs_config(prompting=False, n_ctx=16, depth=9, epochs=11, lr=2e-6):
    """A frozen yacs CfgNode with the fields and value types of the official `utils/config.py`."""
    c = CfgNode()
    c.BASE = [""]
    c.DATA = CfgNode()
    c.DATA.ROOT, c.DATA.TRAIN_FILE, c.DATA.VAL_FILE = "/data/hmdb51", "train.txt", "val.txt"
    c.DATA.DATASET, c.DATA.INPUT_SIZE, c.DATA.NUM_FRAMES, c.DATA.NUM_CLASSES = "hmdb51", 224, 32, 51
    c.DATA.LABEL_LIST = "labels/hmdb_51_labels.csv"
    c.MODEL = CfgNode()
    c.MODEL.ARCH, c.MODEL.DROP_PATH_RATE, c.MODEL.PRETRAINED, c.MODEL.RESUME = "ViT-B/16", 0.0, None, None
    c.MODEL.FIX_TEXT = True
    c.TRAINER = CfgNode()
    c.TRAINER.ViFi_CLIP = CfgNode()
    t = c.TRAINER.ViFi_CLIP
    t.PROMPT_MODEL, t.CTX_INIT, t.USE, t.ZS_EVAL = prompting, CTX_INIT, "both", False
    t.N_CTX_VISION = t.N_CTX_TEXT = n_ctx if prompting else 0
    t.PROMPT_DEPTH_VISION = depth if prompting else 0
    t.PROMPT_DEPTH_TEXT = depth if prompting else 1
    c.TRAIN = CfgNode()
    c.TRAIN.EPOCHS, c.TRAIN.WARMUP_EPOCHS, c.TRAIN.WEIGHT_DECAY, c.TRAIN.LR = epochs, 5, 0.001, lr
    c.TRAIN.BATCH_SIZE, c.TRAIN.ACCUMULATION_STEPS, c.TRAIN.LR_SCHEDULER = 4, 2, "cosine"
    c.TRAIN.OPTIMIZER, c.TRAIN.OPT_LEVEL, c.TRAIN.AUTO_RESUME, c.TRAIN.USE_CHECKPOINT = "adamw", "O1", False, False
    c.AUG = CfgNode()
    c.AUG.LABEL_SMOOTH, c.AUG.COLOR_JITTER, c.AUG.GRAY_SCALE = 0.1, 0.8, 0.2
    c.AUG.MIXUP, c.AUG.CUTMIX, c.AUG.MIXUP_SWITCH_PROB = 0.8, 1.0, 0.5
    c.AUG.SCALES = (1, 0.875, 0.75, 0.66)  # yacs keeps tuples; the official defaults hold none, user configs may
    c.TEST = CfgNode()
    c.TEST.NUM_CLIP, c.TEST.NUM_CROP, c.TEST.ONLY_TEST, c.TEST.MULTI_VIEW_INFERENCE = 1, 1, False, False
    c.OUTPUT, c.SAVE_FREQ, c.PRINT_FREQ, c.SEED = "output/hmdb", 10, 50, 1024
    c.LOCAL_RANK = 0  # set by update_config from the launcher
    c.freeze()
    return c


def scheduler_state(lr, total, warmup):
    """The plain-data state of timm's CosineLRScheduler as `lr_scheduler.state_dict()` gives it."""
    return {"param_group_field": "lr", "_initial_param_group_field": "initial_lr", "base_values": [lr],
            "metric": None, "t_in_epochs": False, "noise_range_t": None, "noise_pct": 0.67, "noise_type": "normal",
            "noise_std": 1.0, "noise_seed": 42, "initialize": True, "t_initial": total, "lr_min": lr / 100,
            "cycle_mul": 1.0, "cycle_decay": 1.0, "cycle_limit": 1, "warmup_t": warmup, "warmup_lr_init": 0,
            "warmup_prefix": False, "k_decay": 1.0, "warmup_steps": [lr / warmup]}


def save_checkpoint(model, path, epoch=9, max_accuracy=51.3):
    """torch.save what `epoch_saving` saves for `model`, after one real AdamW step on its trainable tensors."""
    prompting = model.n_text > 0
    config = yacs_config(prompting, max(model.n_text, 1), 3)
    trainable = [p.detach().clone().requires_grad_() for n, p in model.named_parameters()
                 if not prompting or "VPT" in n or "prompt_learner" in n]  # copies: `model` keeps its weights
    optimizer = torch.optim.AdamW(trainable, lr=config.TRAIN.LR, weight_decay=0.001, betas=(0.9, 0.98), eps=1e-8)
    sum((p.float() ** 2).sum() for p in trainable).backward()
    optimizer.step()
    torch.save({"model": DistributedDataParallelKeys(model).state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler_state(config.TRAIN.LR, 100, 40), "max_accuracy": max_accuracy,
                "epoch": epoch, "config": config}, path)
    return path
