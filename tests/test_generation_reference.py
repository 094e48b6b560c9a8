"""Reference mode (img2img from an identity's image) on tiny random weights (CPU, fp32)."""

from __future__ import annotations

import numpy as np
import pytest

from synthface.errors import ConfigError, InputDataError
from synthface.generation.config import GenerationConfig, ReferenceConfig
from synthface.generation.generator import Arc2FaceGenerator
from synthface.generation.reference import ReferenceSource, reference_index, slerp
from synthface.identity.from_images import ReferenceImages
from synthface.models.tiny import init_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(height=64, width=64, steps=4, device="cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return init_tiny(tmp_path_factory.mktemp("tiny-models"), with_face_models=False)


def make(models, strength=0.6, **kw) -> Arc2FaceGenerator:
    return Arc2FaceGenerator.from_folder(
        models, GenerationConfig(**{**SMALL, **kw, "reference": {"enabled": True, "strength": strength}})
    )


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)


def pictures(n: int, seed: int = 1, size=(64, 64)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("scheduler", ["dpmsolver++", "euler_ancestral"])
def test_matches_diffusers_img2img_pipeline(models, scheduler):
    """Same prompt embeddings, image, strength and seed as StableDiffusionImg2ImgPipeline: same pixels."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    gen = make(models, strength=0.6, scheduler=scheduler, guidance=3.0)
    v, image = vectors(1, seed=5), pictures(1)[0]
    ours = gen.generate(v, [1234], reference_images=[image])[0]
    # strength 0.6 runs the last int(4 x 0.6) = 2 of the 4 steps, each with its guidance pass
    assert list(gen.unet_batch_sizes) == [2, 2]
    pipe = StableDiffusionImg2ImgPipeline(
        vae=gen.vae, text_encoder=gen.text_encoder, tokenizer=gen.parts.tokenizer, unet=gen.unet,
        scheduler=gen.new_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        prompt_embeds=gen.conditioner.encode(torch.from_numpy(v)), image=Image.fromarray(image), strength=0.6,
        guidance_scale=3.0, num_inference_steps=4, generator=torch.Generator("cpu").manual_seed(1234), output_type="np",
    ).images[0]
    theirs = (theirs * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    plain = gen.generate(v, [1234])[0]  # the reference really steers the image
    assert np.abs(plain.astype(int) - theirs.astype(int)).max() > 20


def test_image_does_not_depend_on_batch_neighbours(models):
    v, seeds, refs = vectors(4), [7, 8, 9, 10], pictures(4, size=(80, 72))  # resized to 64 x 64 here
    whole = make(models, batch_size=4).generate(v, seeds, reference_images=refs)
    pairs = make(models, batch_size=2).generate(v, seeds, reference_images=refs)
    alone = make(models, batch_size=1).generate(v[2:3], seeds[2:3], reference_images=refs[2:3])
    assert np.abs(whole.astype(int) - pairs.astype(int)).max() <= 1
    assert np.abs(whole[2].astype(int) - alone[0].astype(int)).max() <= 1


def test_strength_shapes_the_schedule_and_bad_inputs_are_clear(models):
    gen = make(models, strength=1.0, guidance=1.0)
    gen.generate(vectors(1), [3], reference_images=pictures(1))
    assert list(gen.unet_batch_sizes) == [1, 1, 1, 1]  # strength 1.0: every step, no guidance pass
    with pytest.raises(ConfigError, match=r"generation\.reference\.strength 0\.2 x 4 steps"):
        make(models, strength=0.2)
    with pytest.raises(InputDataError, match="2 reference images for 1"):
        gen.generate(vectors(1), [3], reference_images=pictures(2))
    with pytest.raises(InputDataError, match="reference image 0: .*grey"):
        gen.generate(vectors(1), [3], reference_images=[np.zeros((64, 64), np.uint8)])


def test_off_by_default_and_keeps_plain_images():
    assert GenerationConfig().reference.enabled is False


def test_slerp_and_deterministic_choice():
    a, b = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    assert np.allclose(slerp(a, b, 0.0), a) and np.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    mid = slerp(a, b, 0.5)
    assert np.isclose(np.linalg.norm(mid), 1) and np.isclose(mid @ a, np.cos(np.pi / 4), atol=1e-6)
    picks = [reference_index(0, 3, k, 5) for k in range(40)]
    assert picks == [reference_index(0, 3, k, 5) for k in range(40)]  # from (seed, id, index) only
    assert set(picks) == set(range(5))  # every image gets used
    assert picks != [reference_index(1, 3, k, 5) for k in range(40)]


def test_reference_source_conditioning_and_record(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    for k in range(3):
        Image.fromarray(pictures(1, seed=k)[0]).save(tmp_path / "a" / f"{k}.png")
    emb = np.eye(3, 512, dtype=np.float32)
    images = ReferenceImages(tmp_path, [["a/0.png", "a/1.png", "a/2.png"]], [emb])
    cls_vec = np.zeros(512, np.float32)
    cls_vec[10] = 1
    plain = ReferenceSource(images, ReferenceConfig(enabled=True, strength=0.3)).candidate(0, 0, 5, cls_vec)
    k = reference_index(0, 0, 5, 3)
    assert plain.record == {"image": f"a/{k}.png", "strength": 0.3, "image_embedding_weight": 0.0}
    assert np.array_equal(plain.vector, cls_vec)
    assert np.array_equal(plain.image, np.asarray(Image.open(tmp_path / "a" / f"{k}.png").convert("RGB")))
    own = ReferenceSource(images, ReferenceConfig(enabled=True, image_embedding_weight=1.0)).candidate(0, 0, 5, cls_vec)
    assert np.allclose(own.vector, emb[k], atol=1e-6)
    half = ReferenceSource(images, ReferenceConfig(enabled=True, image_embedding_weight=0.5)).candidate(0, 0, 5, cls_vec)
    assert np.isclose(half.vector @ emb[k], half.vector @ cls_vec, atol=1e-6)
    (tmp_path / "a" / f"{k}.png").unlink()
    with pytest.raises(InputDataError, match=f"a/{k}.png"):
        ReferenceSource(images, ReferenceConfig(enabled=True)).candidate(0, 0, 5, cls_vec)
