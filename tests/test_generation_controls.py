"""Expression adapter and pose ControlNet on tiny random weights (CPU, fp32).

Parity: our generator's control paths give the pixels of diffusers' own
pipelines (StableDiffusionControlNetPipeline; StableDiffusionPipeline with
``ip_adapter_image_embeds`` built as Arc2Face's demo builds them), fed the same
ID context and seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from synthface.errors import ConfigError, InputDataError, MissingModelError
from synthface.generation.config import GenerationConfig
from synthface.generation.generator import Arc2FaceGenerator
from synthface.models.tiny import init_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(height=64, width=64, steps=3, device="cpu", batch_size=4)
POSE_ON = {"mode": "pool", "pool": "unused-by-the-generator"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return init_tiny(tmp_path_factory.mktemp("tiny-controls"), with_face_models=False, with_controlnet=True, with_exp_adapter=True)


def make(models, **kw) -> Arc2FaceGenerator:
    return Arc2FaceGenerator.from_folder(models, GenerationConfig(**{**SMALL, **kw}))


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)


def flame(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 55)).astype(np.float32)


def control_images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth normal-map-like pictures (not noise: the ControlNet's input is an image)."""
    from synthface.generation.pose_maps import render_normal_map

    angles = np.random.default_rng(seed).uniform(-40, 40, (n, 3))
    return np.stack([render_normal_map(64, yaw, pitch, roll) for yaw, pitch, roll in angles])


def as_uint8(images: np.ndarray) -> np.ndarray:
    return (images * 255).round().astype(np.uint8)


def test_controlnet_path_matches_diffusers_controlnet_pipeline(models):
    import torch
    from diffusers import StableDiffusionControlNetPipeline
    from PIL import Image

    gen = make(models, pose={**POSE_ON, "scale": 0.7}, guidance=3.0)
    v, pose = vectors(1, seed=5), control_images(1)
    ours = gen.generate(v, [1234], pose=pose)[0]
    pipe = StableDiffusionControlNetPipeline(
        vae=gen.vae, text_encoder=gen.text_encoder, tokenizer=gen.parts.tokenizer, unet=gen.unet, controlnet=gen.controlnet,
        scheduler=gen.new_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        prompt_embeds=gen.conditioner.encode(torch.from_numpy(v)), image=Image.fromarray(pose[0]), guidance_scale=3.0,
        num_inference_steps=3, height=64, width=64, controlnet_conditioning_scale=0.7,
        generator=torch.Generator("cpu").manual_seed(1234), output_type="np",
    ).images[0]
    assert np.abs(ours.astype(int) - as_uint8(reference).astype(int)).max() <= 1
    plain = make(models).generate(v, [1234])[0]
    assert np.abs(ours.astype(int) - plain.astype(int)).mean() > 1  # the ControlNet really acts


def test_expression_path_matches_diffusers_ip_adapter_embeds(models):
    """Arc2Face's demo: ip_adapter_image_embeds=[cat([zeros, flame])] of shape [2B, 1, 55], adapter scale set."""
    import torch
    from diffusers import StableDiffusionPipeline

    gen = make(models, expression={"mode": "gaussian", "scale": 0.8}, guidance=3.0)
    v, e = vectors(2, seed=6), flame(2, seed=1)
    ours = gen.generate(v, [11, 12], expression=e)
    pipe = StableDiffusionPipeline(
        vae=gen.vae, text_encoder=gen.text_encoder, tokenizer=gen.parts.tokenizer, unet=gen.unet,
        scheduler=gen.new_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for row, seed in enumerate([11, 12]):
        emb = torch.from_numpy(e[row : row + 1])[:, None, :]
        reference = pipe(
            prompt_embeds=gen.conditioner.encode(torch.from_numpy(v[row : row + 1])),
            ip_adapter_image_embeds=[torch.cat([torch.zeros_like(emb), emb])],
            guidance_scale=3.0, num_inference_steps=3, height=64, width=64,
            generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
        ).images[0]
        assert np.abs(ours[row].astype(int) - as_uint8(reference).astype(int)).max() <= 1
    other = gen.generate(v, [11, 12], expression=flame(2, seed=99))
    assert np.abs(ours.astype(int) - other.astype(int)).mean() > 0.5  # the FLAME vector really acts
    assert gen.unet.config.encoder_hid_dim_type == "ip_image_proj"


def test_both_controls_compose_and_match_the_controlnet_pipeline_with_ip_embeds(models):
    import torch
    from diffusers import StableDiffusionControlNetPipeline
    from PIL import Image

    gen = make(models, expression={"mode": "neutral"}, pose=POSE_ON, guidance=2.0)
    v, e, pose = vectors(1, seed=7), flame(1, seed=2), control_images(1, seed=3)
    ours = gen.generate(v, [77], expression=e, pose=pose)[0]
    pipe = StableDiffusionControlNetPipeline(
        vae=gen.vae, text_encoder=gen.text_encoder, tokenizer=gen.parts.tokenizer, unet=gen.unet, controlnet=gen.controlnet,
        scheduler=gen.new_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    emb = torch.from_numpy(e)[:, None, :]
    reference = pipe(
        prompt_embeds=gen.conditioner.encode(torch.from_numpy(v)), image=Image.fromarray(pose[0]),
        ip_adapter_image_embeds=[torch.cat([torch.zeros_like(emb), emb])], guidance_scale=2.0,
        num_inference_steps=3, height=64, width=64, generator=torch.Generator("cpu").manual_seed(77), output_type="np",
    ).images[0]
    assert np.abs(ours.astype(int) - as_uint8(reference).astype(int)).max() <= 1


def test_reference_mode_composes_with_both_controls(models):
    """Issue 14's reference (img2img) with expression + pose equals diffusers' ControlNet img2img pipeline
    given the same IP-adapter embeds; an image still does not depend on its batch neighbours."""
    import torch
    from diffusers import StableDiffusionControlNetImg2ImgPipeline
    from PIL import Image

    all_three = dict(expression={"mode": "neutral"}, pose=POSE_ON, guidance=2.0, steps=4,
                     reference={"enabled": True, "strength": 0.75})
    gen = make(models, **all_three)
    v, e, pose = vectors(3, seed=8), flame(3, seed=4), control_images(3, seed=5)
    start = np.random.default_rng(6).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    ours = gen.generate(v, [5, 6, 7], expression=e, pose=pose, reference_images=list(start))
    pipe = StableDiffusionControlNetImg2ImgPipeline(
        vae=gen.vae, text_encoder=gen.text_encoder, tokenizer=gen.parts.tokenizer, unet=gen.unet, controlnet=gen.controlnet,
        scheduler=gen.new_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    emb = torch.from_numpy(e[1:2])[:, None, :]
    reference = pipe(
        prompt_embeds=gen.conditioner.encode(torch.from_numpy(v[1:2])), image=Image.fromarray(start[1]),
        control_image=Image.fromarray(pose[1]), strength=0.75, controlnet_conditioning_scale=1.0,  # its default is 0.8
        ip_adapter_image_embeds=[torch.cat([torch.zeros_like(emb), emb])], guidance_scale=2.0,
        num_inference_steps=4, height=64, width=64, generator=torch.Generator("cpu").manual_seed(6), output_type="np",
    ).images[0]
    assert np.abs(ours[1].astype(int) - as_uint8(reference).astype(int)).max() <= 1
    alone = make(models, **all_three, batch_size=1).generate(
        v[2:], [7], expression=e[2:], pose=pose[2:], reference_images=[start[2]]
    )
    assert np.abs(ours[2].astype(int) - alone[0].astype(int)).max() <= 1
    no_reference = make(models, **{k: w for k, w in all_three.items() if k != "reference"})
    plain = no_reference.generate(v[1:2], [6], expression=e[1:2], pose=pose[1:2])[0]
    assert np.abs(ours[1].astype(int) - plain.astype(int)).mean() > 1  # the reference image really acts


def test_controlled_image_does_not_depend_on_batch_neighbours(models):
    gen4 = make(models, expression={"mode": "neutral"}, pose=POSE_ON, guidance=3.0, guidance_fraction=0.5)
    gen1 = make(models, expression={"mode": "neutral"}, pose=POSE_ON, guidance=3.0, guidance_fraction=0.5, batch_size=1)
    v, e, pose = vectors(3), flame(3), control_images(3)
    whole = gen4.generate(v, [1, 2, 3], expression=e, pose=pose)
    alone = gen1.generate(v[2:], [3], expression=e[2:], pose=pose[2:])
    assert np.abs(whole[2].astype(int) - alone[0].astype(int)).max() <= 1
    assert gen4.describe()["expression"] == {"adapter_scale": 1.0} and gen4.describe()["pose"] == {"controlnet_scale": 1.0}


def test_plain_generator_describes_itself_as_before(models):
    d = make(models).describe()
    assert "expression" not in d and "pose" not in d


def test_control_arguments_are_checked(models):
    plain = make(models, steps=1)
    with pytest.raises(ConfigError, match="generation.expression.mode is off"):
        plain.generate(vectors(1), [1], expression=flame(1))
    with pytest.raises(ConfigError, match="generation.pose.mode is off"):
        plain.generate(vectors(1), [1], pose=control_images(1))
    gen = make(models, steps=1, expression={"mode": "neutral"}, pose=POSE_ON)
    with pytest.raises(InputDataError, match="generation.expression is on"):
        gen.generate(vectors(1), [1], pose=control_images(1))
    with pytest.raises(InputDataError, match=r"expression must be float \[1, 55\]"):
        gen.generate(vectors(1), [1], expression=np.zeros((1, 54), np.float32), pose=control_images(1))
    with pytest.raises(InputDataError, match=r"pose control images must be uint8 \[1, 64, 64, 3\]"):
        gen.generate(vectors(1), [1], expression=flame(1), pose=np.zeros((1, 64, 64, 4), np.uint8))


def test_missing_control_weights_name_the_file_and_the_flag(tmp_path):
    import shutil

    from synthface.models.tiny import init_tiny as write

    folder = write(tmp_path / "m", with_face_models=False)
    with pytest.raises(MissingModelError, match=r"controlnet/config.json.*--controlnet"):
        make(folder, pose=POSE_ON)
    with pytest.raises(MissingModelError, match=r"exp_adapter/exp_adapter.bin.*--exp-adapter"):
        make(folder, expression={"mode": "neutral"})
    shutil.rmtree(folder)
