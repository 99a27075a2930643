"""Retrieval fine-tuning end to end: it learns a captioned synthetic task, its model serves the tools and
converts to OpenAI's layout, it resumes and runs as two processes with the losses of one, in bf16 with remat."""
import json

import numpy as np
import pytest
import torch

from configs import retrieval as retrieval_config
from data_pipelines import pipeline
from runs import losses, run_job, run_main
from vifi_jax import api, extract, search
from vifi_jax.evaluators import job, retrieval
from vifi_jax.train import loop
from vifi_jax.weights import convert

# Two processes all-reduce the gradient in another order than one process sums it (see test_multihost).
RTOL = 1e-5
SMOKE = "--config=retrieval:train,smoke"
TWO_EPOCHS = ["--config.train.epochs=2", "--config.checkpoint.every_steps=4", "--config.eval.every_epochs=100"]


def tool_similarity(model, pairs, config):
    """Caption x video cosines [8, 8] from the model as the tools use it (vifi_jax.load, load_video)."""
    videos = np.concatenate([np.asarray(model.encode_video(api.load_video(path, config.data.num_frames, 32)))
                             for path, _ in pairs])
    return np.asarray(model.encode_text([caption for _, caption in pairs])) @ videos.T


def test_fine_tuning_lifts_text_to_video_r1_and_the_model_serves_the_tools(tmp_path, openai_model):
    config = retrieval_config.get_config("train,smoke")
    config.eval.every_epochs = 100  # after epoch 1 and the last
    before = job.run(retrieval_config.get_config("smoke"), str(tmp_path / "before"))["final"]["retrieval"]
    results = loop.train_and_evaluate(config, str(tmp_path / "run"))
    after = results["final"]["retrieval"]
    # 8 clips, each with its own caption: chance R@1 is 12.5%.
    assert before["t2v"]["R1"] <= 37.5 and after["t2v"]["R1"] >= 62.5, (before["t2v"], after["t2v"])
    assert after["v2t"]["R1"] >= 50.0 and "dual_softmax" not in after
    assert len(results["history"]) == 40 and results["history"][-1]["loss"] < results["history"][0]["loss"] - 1.0
    assert sorted(results["evaluations"]) == ["step_4", "step_40"]
    best = max(results["evaluations"].items(), key=lambda kv: kv[1]["retrieval"]["t2v"]["R1"])
    assert results["best"] == {"t2v_R1": best[1]["retrieval"]["t2v"]["R1"], "step": int(best[0][5:]),
                               "set": "retrieval"}
    # The fine-tuned model as the tools load it (vifi_jax.load: predict, extract, search): the same ranks,
    # except where a caption's first two videos score within float rounding of each other (either may win).
    model = api.load(str(tmp_path / "run" / "final"))
    pairs = retrieval.caption_pairs(config)
    similarity = tool_similarity(model, pairs, config)
    ordered = np.sort(similarity, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > 1e-3
    right = similarity.argmax(axis=1) == np.arange(8)
    assert 100 * np.mean(right & clear) <= after["t2v"]["R1"] <= 100 * np.mean(right | ~clear)
    exported = extract.extract(model, [path for path, _ in pairs], str(tmp_path / "features"),
                               num_frames=config.data.num_frames)
    assert all("error" not in e for e in exported) and clear.sum() >= 2
    for i in np.flatnonzero(clear)[:2]:  # search's top hit for a caption is the video the similarity ranks first
        hit = search.search(str(tmp_path / "features"), 1, query=pairs[i][1], model=model)[0]
        assert hit["video"] == pairs[int(similarity[i].argmax())][0]
    # Written in OpenAI's layout, it loads into OpenAI's clip/model.py and computes the same features.
    config_fields, params = convert.read(str(tmp_path / "run" / "final"))
    convert.write_pytorch(params, tmp_path / "retrieval.pt", layout="openai")
    fields = {k: config_fields[k] for k in ("embed_dim", "image_resolution", "vision_layers", "vision_width",
                                            "vision_patch_size", "context_length", "vocab_size", "transformer_width",
                                            "transformer_heads", "transformer_layers")}
    theirs = openai_model.CLIP(**fields)  # build_model would assume 64-wide heads: the smoke text tower has 2 of 32
    theirs.load_state_dict(torch.load(tmp_path / "retrieval.pt", weights_only=True), strict=True)
    theirs = theirs.float().eval()
    ids = retrieval.free_text_ids(model.module, [caption for _, caption in pairs])
    frames = api.load_video(pairs[0][0], config.data.num_frames, 32)[0]  # [T, H, W, 3], normalised
    with torch.no_grad():
        their_text = theirs.encode_text(torch.from_numpy(ids).long()).numpy()
        their_frames = theirs.encode_image(torch.from_numpy(np.asarray(frames)).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(np.asarray(model.encode_text(ids, normalize=False)), their_text, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(model.encode_frames(np.asarray(frames)[None]))[0], their_frames,
                               rtol=1e-4, atol=1e-4)


def test_two_processes_train_like_one_and_the_run_resumes_in_one(tmp_path):
    """The CLI recipe on generated clips: one process whole; two processes stopped after 4 of 8 updates
    (their checkpoint), then resumed by one process: the losses of the whole one-process run."""
    run_main(tmp_path / "one", *TWO_EPOCHS, config=SMOKE)
    whole = losses(tmp_path / "one")
    assert len(whole) == 8
    run_job(tmp_path / "two", 2, *TWO_EPOCHS, "--config.train.max_steps=4", config=SMOKE, logs=tmp_path / "logs")
    np.testing.assert_allclose(losses(tmp_path / "two"), whole[:4], rtol=RTOL)
    output = run_main(tmp_path / "two", *TWO_EPOCHS, config=SMOKE)
    assert "resumed from checkpoint at update 4" in output
    np.testing.assert_allclose(losses(tmp_path / "two"), whole, rtol=RTOL)
    # The two runs' final models score the test clips alike (cosines: continuous, unlike ranks, which a
    # float-rounding difference may flip at a near tie).
    config = retrieval_config.get_config("train,smoke")
    pairs = retrieval.caption_pairs(config)
    one, two = (tool_similarity(api.load(str(tmp_path / run / "final")), pairs, config) for run in ("one", "two"))
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-3)
    assert json.load(open(tmp_path / "two" / "results.json"))["final"]["retrieval"]["videos"] == 8


def test_bf16_with_remat_trains_close_to_fp32_and_dual_softmax_figures_are_marked(tmp_path):
    runs = {}
    for name, dtype, remat in (("fp32", "float32", False), ("bf16", "bfloat16", True)):
        config = retrieval_config.get_config("train,smoke")
        config.model.dtype, config.model.remat = dtype, remat
        config.train.max_steps, config.eval.every_epochs = 3, 100
        config.retrieval.dual_softmax = name == "bf16"
        runs[name] = loop.train_and_evaluate(config, str(tmp_path / name))
    fp32, bf16 = ([h["loss"] for h in runs[k]["history"]] for k in ("fp32", "bf16"))
    assert len(bf16) == 3 and all(np.isfinite(bf16))
    np.testing.assert_allclose(bf16, fp32, rtol=0.05)
    found = runs["bf16"]["final"]["retrieval"]
    assert found["dual_softmax"]["note"].startswith("dual softmax at inference")
    assert set(found["dual_softmax"]) == {"note", "t2v", "v2t"} and 0 <= found["dual_softmax"]["t2v"]["R1"] <= 100


def test_dual_softmax_reweights_by_the_other_direction():
    # Video 0 is every caption's favourite by a little; dual softmax asks whether caption 1 is also video 0's
    # favourite (it is not: caption 0 is), and lets caption 1 find video 1.
    similarity = np.array([[10.0, 1.0], [5.0, 4.5]])
    assert retrieval.metrics(similarity, [0, 1])["t2v"]["R1"] == 50.0
    reweighted = retrieval.dual_softmax(similarity, axis=0)
    np.testing.assert_allclose(reweighted[1], [5.0 * np.exp(5) / (np.exp(10) + np.exp(5)),
                                               4.5 * np.exp(4.5) / (np.exp(1) + np.exp(4.5))])
    assert retrieval.metrics(reweighted, [0, 1])["t2v"]["R1"] == 100.0
    unreadable = retrieval.dual_softmax(np.array([[1.0, -np.inf], [2.0, -np.inf]]), axis=0)
    assert np.isneginf(unreadable[:, 1]).all() and np.isfinite(unreadable[:, 0]).all()


def test_an_unreadable_video_is_replaced_in_training_and_counted_once(tmp_path):
    """Retrieval training reads the test view but replaces an unreadable video as classification does, and
    reports it once however many captions (elements) it has."""
    from data_pipelines import captions
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    config = retrieval_config.get_config("train,smoke")
    from vifi_jax.runtime import data
    good = data.captioned_train_split(config).source.paths[0]
    source = captions.CaptionedVideoSource([str(tmp_path / "bad.mp4"), good], [["broken"], ["fine"]])
    element = pipeline.LoadClip(source, data.clip_spec(config, True), seed=0).map((0, 0))
    assert element["valid"] and element["bad_index"][0] == 0 and element["label"] == 1
    # Every caption a sample: the video's three elements are one unreadable video in the report and the count.
    every = captions.CaptionedVideoSource([str(tmp_path / "bad.mp4"), good], [["a", "b", "c"], ["fine"]],
                                          every_caption=True)
    bad = pipeline.BadSamples(every, max_fraction=1.0)
    reported = [pipeline.LoadClip(every, data.clip_spec(config, True), seed=0).map((i, i)) for i in range(3)]
    for element in reported:
        bad.update({k: element[k][None] for k in ("bad_index", "bad_reason")})
    summary = bad.summary()
    assert (summary["count"], summary["dataset_size"], summary["fraction"]) == (1, 2, 0.5)
    assert [v["file"] for v in summary["videos"]] == [str(tmp_path / "bad.mp4")]
