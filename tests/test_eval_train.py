"""Training on shards: a short run learns, 2-process gloo DDP runs, resume continues."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from eval.backbones import build_backbone
from eval.config import EvalConfig, load_eval_config
from eval.embedders import TorchEmbedder, backbone_from_checkpoint, load_embedder
from eval.toydata import pattern_images, write_pattern_dataset
from eval.train import train
from eval.verification import evaluate_embeddings, pair_embeddings
from synthface.errors import RunStateError

NUM_CLASSES = 8

# Small and quick: MobileFaceNet, CosFace with a scale suited to 8 classes, in-process loader.
# Measured with this recipe (2 threads): held-out pair accuracy 0.50 -> 0.99, AUC 0.52 -> 1.00;
# with 40 steps only 0.75 / 0.85, so 60 it is.
BASE = {
    "seed": 0,
    "model": {"backbone": "mobilefacenet", "embedding_size": 128},
    "loss": {"type": "cosface", "cosface_m3": 0.35, "scale": 16.0},
    "data": {"batch_size": 16, "num_workers": 0, "shuffle_buffer": 100},
    "optim": {"lr": 0.1, "epochs": 100, "max_steps": 60, "warmup_epochs": 0},
    "train": {"log_every": 5, "checkpoint_every": 1000, "bn_recalibration_steps": 8},
}


def _config(**sections) -> dict:
    cfg = json.loads(json.dumps(BASE))
    for section, values in sections.items():
        cfg[section].update(values)
    return cfg


@pytest.fixture(scope="module")
def pattern_root(tmp_path_factory):
    return write_pattern_dataset(tmp_path_factory.mktemp("patterns") / "dataset", NUM_CLASSES, images_per_class=16, shards=2)


def held_out_pairs(per_class: int = 12):
    """Fresh images (unseen in training) of the training classes: same and different pairs."""
    images = pattern_images(np.repeat(np.arange(NUM_CLASSES), per_class), seed=99, num_classes=NUM_CLASSES)
    images = images.reshape(NUM_CLASSES, per_class, 112, 112, 3)
    pairs, issame = [], []
    for c in range(NUM_CLASSES):
        for j in range(0, per_class, 2):
            pairs += [images[c, j], images[c, j + 1]]
            issame.append(True)
            pairs += [images[c, j], images[(c + 1) % NUM_CLASSES, j + 1]]
            issame.append(False)
    return np.stack(pairs), np.array(issame)


def test_short_training_lowers_loss_and_learns_to_verify(pattern_root, tmp_path):
    cfg = EvalConfig.model_validate(_config())
    pairs, issame = held_out_pairs()
    torch.manual_seed(cfg.seed)  # the trainer's own initial weights
    initial = TorchEmbedder(build_backbone("mobilefacenet", 128))
    before = evaluate_embeddings(pair_embeddings(initial, pairs), issame)

    summary = train(cfg, str(pattern_root), tmp_path / "run", echo=lambda line: None)
    assert summary["status"] == "finished" and summary["steps_run"] == 60

    with (tmp_path / "run" / "train_log.csv").open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 12
    assert np.mean(losses[-2:]) < 0.5 * np.mean(losses[:2])

    after = evaluate_embeddings(pair_embeddings(load_embedder(tmp_path / "run"), pairs), issame)
    assert before.auc < 0.75 and before.accuracy < 0.7, before  # the nuisance fools a random network
    assert after.auc >= 0.95, (before, after)
    assert after.accuracy >= 0.85 and after.accuracy >= before.accuracy + 0.25, (before, after)


def test_two_process_gloo_ddp_step(pattern_root, tmp_path):
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(_config(data={"batch_size": 4}, optim={"max_steps": 2}, train={"log_every": 1, "bn_recalibration_steps": 0})))
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "synthface", "train", "--config", str(config), "--data", str(pattern_root), "--out", str(run)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "finished"
    assert info["replicas_identical"] is True  # gradients were all-reduced
    assert "global batch 8" in proc.stdout
    _, meta = backbone_from_checkpoint(run / "backbone.pt")
    assert meta["step"] == 2


def test_resume_continues_and_refuses_a_changed_config(pattern_root, tmp_path, cli):
    short = _config(data={"batch_size": 4}, optim={"max_steps": 2}, train={"log_every": 1, "bn_recalibration_steps": 0})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(short))
    run = tmp_path / "run"
    args = ["train", "--config", config, "--data", pattern_root, "--out", run]
    # The first run and the refusal in-process (a CLI start-up costs seconds); the resume through the CLI.
    train(EvalConfig.model_validate(short), str(pattern_root), run, echo=lambda line: None)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2

    # execution settings may change on resume (here: the loader's timeout)
    more = cli(*args, "--set", "optim.max_steps=4", "--set", "data.worker_timeout_s=900")
    assert more.returncode == 0, more.stderr
    assert "resuming at step 2" in more.stdout
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["optimizer"]["state"]  # momentum buffers carried over
    with (run / "train_log.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]

    changed = load_eval_config(config, ["optim.max_steps=4", "loss.type=arcface"])
    with pytest.raises(RunStateError, match=r"different config \(loss.type differ"):
        train(changed, str(pattern_root), run, echo=lambda line: None)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 4  # the refused run changed nothing
