"""Backbones, margin heads, the shard data pipeline and the LR schedule: small unit checks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from eval.backbones import build_backbone
from eval.config import DataConfig, LossConfig, load_eval_config
from eval.data import ShardStream, resolve_dataset
from eval.losses import AdaFaceHead, CombinedMarginHead, build_head
from eval.toydata import write_pattern_dataset
from eval.train import learning_rate
from synthface.errors import ConfigError, InputDataError


@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18"])  # deeper IResNets: counts below
def test_backbones_map_112_crops_to_embeddings(name):
    torch.manual_seed(0)
    model = build_backbone(name, embedding_size=64).train()  # fresh BN stats: batch statistics
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 64) and torch.isfinite(out).all()


def test_iresnet_depths_match_insightface_parameter_counts():
    # insightface: r18 24.0M, r50 43.6M, r100 65.2M parameters (512-d head).
    counts = {n: sum(p.numel() for p in build_backbone(n).parameters()) / 1e6 for n in ("iresnet18", "iresnet50", "iresnet100")}
    assert counts["iresnet18"] == pytest.approx(24.0, abs=0.1)
    assert counts["iresnet50"] == pytest.approx(43.6, abs=0.1)
    assert counts["iresnet100"] == pytest.approx(65.2, abs=0.1)


def _head_logits(head, cos_target, label=0):
    """Margin logits for one sample whose cosine to class ``label`` is ``cos_target`` (0 elsewhere)."""
    cosine = torch.zeros(1, head.num_classes)
    cosine[0, label] = cos_target
    return head.margin_logits(cosine, torch.tensor([label]), torch.ones(1, 1))


def test_arcface_and_cosface_margins():
    arc = build_head(LossConfig(type="arcface"), num_classes=3, embedding_size=8)
    theta = 1.0
    logits = _head_logits(arc, math.cos(theta))
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(theta + 0.5), rel=1e-5)
    assert logits[0, 1].item() == 0.0
    cos = build_head(LossConfig(type="cosface"), num_classes=3, embedding_size=8)
    assert _head_logits(cos, 0.7)[0, 0].item() == pytest.approx(64 * (0.7 - 0.4), rel=1e-5)
    combined = CombinedMarginHead(3, 8, scale=10, m1=1.0, m2=0.2, m3=0.1)
    assert _head_logits(combined, math.cos(theta))[0, 0].item() == pytest.approx(10 * (math.cos(theta + 0.2) - 0.1), rel=1e-5)


def test_arcface_past_pi_minus_m_falls_back_to_an_additive_penalty():
    # cos(theta + m) rises again once theta + m > pi; insightface then uses
    # cos(theta) - sin(pi - m) * m, which keeps the target logit decreasing in theta.
    arc = build_head(LossConfig(type="arcface"), num_classes=3, embedding_size=8)
    m = 0.5
    thetas = [2.5, math.pi - m - 1e-3, math.pi - m + 1e-3, 2.9, 3.1]
    values = [_head_logits(arc, math.cos(t))[0, 0].item() / 64 for t in thetas]
    assert values[0] == pytest.approx(math.cos(2.5 + m), abs=1e-5)
    assert values[3] == pytest.approx(math.cos(2.9) - math.sin(math.pi - m) * m, abs=1e-5)
    assert all(a > b for a, b in zip(values, values[1:]))  # no rise past pi - m (a small drop at the switch, as there)


def test_adaface_margin_grows_with_feature_norm():
    head = AdaFaceHead(3, 8, scale=64, m=0.4, h=0.333).eval()
    head.batch_mean.fill_(10.0)
    head.batch_std.fill_(2.0)
    cosine = torch.zeros(2, 3)
    cosine[:, 0] = 0.6
    labels = torch.tensor([0, 0])
    logits = head.margin_logits(cosine, labels, torch.tensor([[0.5], [40.0]]))  # scaler clipped to -1 and +1
    low, high = logits[:, 0] / 64
    assert low.item() == pytest.approx(math.cos(math.acos(0.6) + 0.4) - 0.0, abs=1e-4)  # angular margin only
    assert high.item() == pytest.approx(math.cos(math.acos(0.6) - 0.4) - 0.8, abs=1e-4)  # additive margin only


def test_partial_fc_samples_batch_classes_and_remaps_labels():
    torch.manual_seed(0)
    head = build_head(LossConfig(type="arcface", sample_rate=0.1), num_classes=1000, embedding_size=16).train()
    labels = torch.tensor([5, 977, 5, 123])
    index, remapped = head.sample_classes(labels)
    assert index.numel() == 100
    assert torch.equal(index[remapped], labels)  # every positive kept, labels point at them
    loss = head(torch.randn(4, 16), labels)
    loss.backward()
    touched = (head.weight.grad.abs().sum(dim=1) > 0).nonzero().flatten()
    # Only the sampled centres (positives among them) take part in this step's softmax.
    assert len(touched) == 100 and {5, 977, 123} <= set(touched.tolist())


def test_learning_rate_warms_up_then_decays_polynomially():
    lrs = [learning_rate(s, 0.1, warmup=10, total=110, power=2.0) for s in range(110)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[60] == pytest.approx(0.1 * (1 - 50 / 100) ** 2)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  backbone: resnet9000\n")
    with pytest.raises(ConfigError, match="model.backbone"):
        load_eval_config(path)
    with pytest.raises(ConfigError, match="loss.scale"):
        load_eval_config(None, ["loss.scale=-1"])


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return write_pattern_dataset(tmp_path_factory.mktemp("toy") / "ds", num_classes=6, images_per_class=4, shards=3)


def test_resolve_dataset_from_root_pattern_and_url(toy_root):
    spec = resolve_dataset(str(toy_root))
    assert (spec.num_classes, spec.num_images, len(spec.urls)) == (6, 24, 3)
    pattern = resolve_dataset(f"{toy_root}/shard-{{000000..000001}}.tar")
    assert [u.rsplit("/", 1)[1] for u in pattern.urls] == ["shard-000000.tar", "shard-000001.tar"]
    assert pattern.num_classes == 6
    assert len(resolve_dataset(f"file://{toy_root}").urls) == 3


def test_resolve_dataset_errors(tmp_path, toy_root):
    with pytest.raises(InputDataError, match="dataset.json not found"):
        resolve_dataset(str(tmp_path))
    (tmp_path / "dataset.json").write_text(json.dumps({"num_classes": 2, "num_images": 4}))
    with pytest.raises(InputDataError, match="no committed shards"):
        resolve_dataset(str(tmp_path))


def _first_pass(spec, rank, world):
    cfg = DataConfig(batch_size=1, num_workers=0, shuffle_buffer=0, flip=False)
    stream = iter(ShardStream(spec, cfg, rank=rank, world_size=world, seed=3))
    return [next(stream) for _ in range(spec.num_images // world)]


@pytest.mark.parametrize("shards", [2, 1])
def test_ranks_read_disjoint_halves(tmp_path, shards):
    """By shard when there are enough shards, by sample otherwise: together, one full pass."""
    root = write_pattern_dataset(tmp_path / "ds", num_classes=4, images_per_class=4, shards=shards)
    spec = resolve_dataset(str(root))
    batches = _first_pass(spec, 0, 2) + _first_pass(spec, 1, 2)
    images = torch.cat([b[0] for b in batches])
    assert images.shape[1:] == (3, 112, 112) and images.dtype == torch.uint8
    # The same sample twice would mean overlap: all images of a pass are distinct.
    flat = images.flatten(1)
    assert len({bytes(row.numpy()) for row in flat}) == len(flat)


def test_labels_outside_num_classes_are_refused(tmp_path):
    root = write_pattern_dataset(tmp_path / "ds", num_classes=4, images_per_class=2, shards=1)
    meta = json.loads((root / "dataset.json").read_text())
    meta["num_classes"] = 2
    (root / "dataset.json").write_text(json.dumps(meta))
    stream = iter(ShardStream(resolve_dataset(str(root)), DataConfig(batch_size=8, num_workers=0, shuffle_buffer=0)))
    with pytest.raises(InputDataError, match="outside"):
        next(stream)


def _loader_pass(spec, rank, world, workers):
    """The first pass of one rank through the real loader (worker processes included)."""
    from eval.data import make_loader

    cfg = DataConfig(batch_size=1, num_workers=workers, shuffle_buffer=0, flip=False)
    batches = []
    for batch in make_loader(spec, cfg, rank=rank, world_size=world, seed=3):
        batches.append(batch)
        if len(batches) == spec.num_images // world:
            break
    return batches


@pytest.mark.parametrize("shards", [4, 1])  # 4 shares (2 ranks x 2 workers): by shard; 1 shard: by sample
def test_ranks_and_workers_together_read_each_sample_once(tmp_path, shards):
    root = write_pattern_dataset(tmp_path / "ds", num_classes=4, images_per_class=4, shards=shards)
    spec = resolve_dataset(str(root))
    everything = [(bytes(img.flatten().numpy()), int(label)) for img, label in _loader_pass(spec, 0, 1, 0)]
    assert len(set(everything)) == spec.num_images == 16  # the reference pass: all samples, distinct
    split = [
        (bytes(img.flatten().numpy()), int(label))
        for rank in (0, 1)
        for img, label in _loader_pass(spec, rank, 2, workers=2)
    ]
    # Four shares, one epoch's worth of steps: every sample exactly once, labels from cls intact.
    assert sorted(split) == sorted(everything)
