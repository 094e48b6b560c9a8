"""The batched Arc2Face generator on tiny random weights (CPU, fp32)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from synthface.config import load_config
from synthface.errors import ConfigError, InputDataError, MissingModelError
from synthface.generation.config import GenerationConfig
from synthface.generation.generator import Arc2FaceGenerator
from synthface.models.tiny import init_tiny


pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(height=64, width=64, steps=2, lcm_steps=2, device="cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return init_tiny(tmp_path_factory.mktemp("tiny-models"), with_lcm_lora=True, with_face_models=False)


def make(models, **kw) -> Arc2FaceGenerator:
    return Arc2FaceGenerator.from_folder(models, GenerationConfig(**{**SMALL, **kw}))


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)


def test_output_shape_dtype_and_content(models):
    gen = make(models, batch_size=2, height=64, width=96)
    images = gen.generate(vectors(3), [10, 11, 12])
    assert images.shape == (3, 64, 96, 3) and images.dtype == np.uint8
    assert images.std() > 1.0  # not a constant picture
    d = gen.describe()
    assert (d["scheduler"], d["steps"], d["guidance"], d["height"], d["width"], d["dtype"]) == (
        "dpmsolver++", 2, 3.0, 64, 96, "float32"
    )
    assert d["models_origin"] == "tiny-random" and d["lcm_lora"] is False


def test_defaults_are_arc2face_published_settings():
    cfg = GenerationConfig()
    assert (cfg.scheduler, cfg.steps, cfg.guidance, cfg.height, cfg.width) == ("dpmsolver++", 25, 3.0, 512, 512)


def test_image_does_not_depend_on_batch_composition(models):
    v, seeds = vectors(4), [101, 102, 103, 104]
    gen4 = make(models, batch_size=4)
    whole = gen4.generate(v, seeds)
    pairs = make(models, batch_size=2).generate(v, seeds)
    gen1 = make(models, batch_size=1)
    alone = gen1.generate(v[3:4], seeds[3:4])
    # Same pair, different neighbours and batch sizes: same image (fp32 CPU; allow 1 level of rounding).
    assert np.abs(whole.astype(int) - pairs.astype(int)).max() <= 1
    assert np.abs(whole[3].astype(int) - alone[0].astype(int)).max() <= 1
    reordered = gen4.generate(v[::-1], seeds[::-1])[::-1]
    assert np.abs(whole.astype(int) - reordered.astype(int)).max() <= 1
    # ...while the seed and the identity each change the image.
    other_seed = gen1.generate(v[3:4], [999])
    other_id = gen1.generate(vectors(1, seed=42), seeds[3:4])
    assert np.abs(other_seed.astype(int) - alone.astype(int)).mean() > 2
    assert np.abs(other_id.astype(int) - alone.astype(int)).mean() > 0.5


def test_guidance_runs_uncond_and_cond_in_one_call_and_1_0_skips_uncond(models):
    guided = make(models, batch_size=3, guidance=3.0)
    guided.generate(vectors(3), [1, 2, 3])
    assert list(guided.unet_batch_sizes) == [6] * 2  # one UNet call per step, uncond + cond halves
    plain = make(models, batch_size=3, guidance=1.0)
    plain.generate(vectors(3), [1, 2, 3])
    assert list(plain.unet_batch_sizes) == [3] * 2  # no unconditional pass at all
    assert plain.describe()["guided_steps"] == 0


def test_guidance_truncation_guides_only_the_first_fraction(models):
    full = make(models, batch_size=2, steps=4)
    half = make(models, batch_size=2, steps=4, guidance_fraction=0.5)
    a = full.generate(vectors(2), [5, 6])
    b = half.generate(vectors(2), [5, 6])
    assert list(half.unet_batch_sizes) == [4, 4, 2, 2]
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0  # it changes the sampling
    assert make(models, steps=25, guidance_fraction=0.3).guided_steps == 8  # ceil(0.3 * 25)


@pytest.mark.parametrize("scheduler", ["ddim", "euler_ancestral"])
def test_other_schedulers_keep_batch_independence(models, scheduler):
    # euler_ancestral adds noise at each step: it must come from each image's own generator.
    v, seeds = vectors(3), [7, 8, 9]
    whole = make(models, batch_size=3, scheduler=scheduler).generate(v, seeds)
    alone = make(models, batch_size=1, scheduler=scheduler).generate(v[1:2], seeds[1:2])
    assert np.abs(whole[1].astype(int) - alone[0].astype(int)).max() <= 1


def test_lcm_lora_mode(models):
    gen = make(models, lcm="auto", batch_size=2)
    d = gen.describe()
    assert (d["scheduler"], d["steps"], d["guidance"], d["lcm_lora"]) == ("lcm", 2, 1.0, True)
    v, seeds = vectors(3), [1, 2, 3]
    images = gen.generate(v, seeds)
    assert images.shape == (3, 64, 64, 3)
    assert list(gen.unet_batch_sizes) == [2] * 2 + [1] * 2  # guidance 1.0: no uncond pass
    # LCM adds fresh noise between steps: still per-image generators.
    alone = make(models, lcm="on", batch_size=1).generate(v[2:3], seeds[2:3])
    assert np.abs(images[2].astype(int) - alone[0].astype(int)).max() <= 1


def test_lcm_lora_is_fused_into_the_unet(models):
    import torch

    base = make(models).unet.state_dict()
    fused = make(models, lcm="on").unet.state_dict()
    assert set(base) == set(fused)  # no adapter modules left behind
    q = [k for k in base if k.endswith("attn1.to_q.weight")][0]
    assert not torch.equal(base[q], fused[q])


def test_lcm_on_without_weights_names_the_file(models, tmp_path):
    folder = tmp_path / "no-lcm"
    shutil.copytree(models, folder)
    shutil.rmtree(folder / "lcm-lora")
    with pytest.raises(MissingModelError, match=r"lcm-lora/pytorch_lora_weights.safetensors.*--lcm-lora"):
        make(folder, lcm="on")
    assert make(folder, lcm="auto").describe()["lcm_lora"] is False
    # the LCM scheduler on the plain UNet (auto found no LoRA) would sample garbage: refused too
    with pytest.raises(MissingModelError, match=r"generation.scheduler is lcm.*lcm-lora/pytorch_lora_weights"):
        make(folder, lcm="auto", scheduler="lcm")


@pytest.mark.parametrize("text, value", [("on", "on"), ("off", "off"), ("true", "on"), ("no", "off"), ("auto", "auto")])
def test_lcm_switch_reads_yaml_words(text, value):
    from pipelines.config import FactoryConfig

    assert load_config(FactoryConfig, None, [f"generation.lcm={text}"]).generation.lcm == value


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 256), np.float32), r"shape \[B, 512\]"),
        (np.zeros((2, 3, 512), np.float32), r"shape \[B, 512\]"),
        (np.full((2, 512), np.nan, np.float32), "NaN or inf"),
        (np.concatenate([np.ones((1, 512)), np.full((1, 512), np.inf)]).astype(np.float32), r"NaN or inf.*\[1\]"),
        (np.zeros((2, 512), np.float32), "zero length"),
        (np.ones((2, 512), np.int64), "floating point"),
    ],
)
def test_bad_identity_vectors(models, bad, match):
    gen = make(models, batch_size=2, steps=1)
    with pytest.raises(InputDataError, match=match):
        gen.generate(bad, [1, 2])


def test_seed_count_must_match(models):
    with pytest.raises(InputDataError, match="2 identity vectors but 3 seeds"):
        make(models, steps=1).generate(vectors(2), [1, 2, 3])


@pytest.mark.parametrize(
    "override, key",
    [
        ("generation.steps=0", "generation.steps"),
        ("generation.guidance=0.5", "generation.guidance"),
        ("generation.guidance_fraction=0", "generation.guidance_fraction"),
        ("generation.height=100", "generation.height"),
        ("generation.batch_size=0", "generation.batch_size"),
        ("generation.dtype=float64", "generation.dtype"),
        ("generation.scheduler=heun", "generation.scheduler"),
        ("generation.lcm=sometimes", "generation.lcm"),
        ("generation.colour=1", "generation.colour"),
    ],
)
def test_out_of_range_settings_name_the_key(override, key):
    from pipelines.config import FactoryConfig

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(FactoryConfig, None, [override])


def test_device_and_dtype_errors(models):
    with pytest.raises(ConfigError, match="float16 needs a CUDA device"):
        make(models, dtype="float16")
    for device in ("mps", "meta", "tpu"):
        with pytest.raises(ConfigError, match="generation.device"):
            make(models, device=device)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            make(models, device="cuda")


def test_bfloat16_on_cpu_runs(models):
    gen = make(models, dtype="bfloat16")
    assert gen.describe()["dtype"] == "bfloat16"
    assert gen.generate(vectors(1), [3]).shape == (1, 64, 64, 3)


def test_missing_folder_and_missing_file(models, tmp_path):
    with pytest.raises(MissingModelError, match="model folder not found.*models download"):
        make(tmp_path / "absent")
    broken = tmp_path / "broken"
    shutil.copytree(models, broken)
    (broken / "encoder" / "pytorch_model.bin").unlink()
    with pytest.raises(MissingModelError, match=r"encoder/pytorch_model.bin.*models download"):
        make(broken)


def test_damaged_file_is_a_clear_error(models, tmp_path):
    broken = tmp_path / "damaged"
    shutil.copytree(models, broken)
    (broken / "arc2face" / "config.json").write_text("{ not json")
    with pytest.raises(MissingModelError, match="Arc2Face UNet"):
        make(broken)
    shutil.copytree(models, tmp_path / "bad-vocab")
    (tmp_path / "bad-vocab" / "tokenizer" / "vocab.json").write_text("{}")  # tokenizers raises a bare Exception
    with pytest.raises(MissingModelError, match="could not load the tokenizer"):
        make(tmp_path / "bad-vocab")


@pytest.mark.parametrize("scheduler", ["dpmsolver++", "euler_ancestral"])
def test_matches_the_diffusers_pipeline_given_the_id_context(models, scheduler):
    """Arc2Face's own inference is StableDiffusionPipeline(prompt_embeds=<ID context>) with no
    negative prompt: the uncond context is the empty prompt, CFG is uncond + g * (cond - uncond),
    the latent comes from the seed's generator. Ours must give the same pixels."""
    import torch
    from diffusers import StableDiffusionPipeline

    gen = make(models, scheduler=scheduler, steps=3, guidance=3.0)
    v = vectors(1, seed=5)
    ours = gen.generate(v, [1234])[0]
    pipe = StableDiffusionPipeline(
        vae=gen.vae, text_encoder=gen.text_encoder, tokenizer=gen.parts.tokenizer, unet=gen.unet,
        scheduler=gen.new_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        prompt_embeds=gen.conditioner.encode(torch.from_numpy(v)), guidance_scale=3.0, num_inference_steps=3,
        height=64, width=64, generator=torch.Generator("cpu").manual_seed(1234), output_type="np",
    ).images[0]
    reference = (reference * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1
