"""The production loader reads checkpoints saved the way the real ones were.

Arc2Face's `encoder/` is a transformers-4-era `pytorch_model.bin` (fp16, keys
prefixed `text_model.`, a custom wrapper class named in `architectures`), its
UNet config was written by a 2024 diffusers, and SD 1.5's VAE checkpoint uses
the old attention parameter names. Each is rebuilt here from tiny modules and
loaded back through `load_parts`, the code path of every run.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from synthface.generation.loading import load_parts
from synthface.models import tiny as tiny_mod


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# The UNet2DConditionModel config keys a diffusers 0.26 save wrote (Arc2Face's era).
UNET_2024_KEYS = {
    "act_fn", "addition_embed_type", "addition_embed_type_num_heads", "addition_time_embed_dim",
    "attention_head_dim", "attention_type", "block_out_channels", "center_input_sample",
    "class_embed_type", "class_embeddings_concat", "conv_in_kernel", "conv_out_kernel",
    "cross_attention_dim", "cross_attention_norm", "down_block_types", "downsample_padding", "dropout",
    "dual_cross_attention", "encoder_hid_dim", "encoder_hid_dim_type", "flip_sin_to_cos", "freq_shift",
    "in_channels", "layers_per_block", "mid_block_only_cross_attention", "mid_block_scale_factor",
    "mid_block_type", "norm_eps", "norm_num_groups", "num_attention_heads", "num_class_embeds",
    "only_cross_attention", "out_channels", "projection_class_embeddings_input_dim",
    "resnet_out_scale_factor", "resnet_skip_time_act", "resnet_time_scale_shift",
    "reverse_transformer_layers_per_block", "sample_size", "time_cond_proj_dim",
    "time_embedding_act_fn", "time_embedding_dim", "time_embedding_type", "timestep_post_act",
    "transformer_layers_per_block", "up_block_types", "upcast_attention", "use_linear_projection",
}
OLD_VAE_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


@pytest.fixture(scope="module")
def era_folder(tmp_path_factory):
    """A tiny model folder written in the real checkpoints' formats; returns (root, modules)."""
    from transformers import CLIPTextModel

    root = tmp_path_factory.mktemp("era-models")
    torch.manual_seed(0)
    vocab = tiny_mod.write_tiny_tokenizer(root / "tokenizer")
    encoder = CLIPTextModel(tiny_mod.tiny_text_config(vocab)).eval()
    tiny_mod.write_legacy_text_encoder(encoder, root / "encoder", dtype=torch.float16)
    config = json.loads((root / "encoder" / "config.json").read_text())
    config["architectures"] = ["CLIPTextModelWrapper"]  # Arc2Face's own subclass name
    (root / "encoder" / "config.json").write_text(json.dumps(config))

    unet = tiny_mod.tiny_unet(encoder.config.hidden_size).eval()
    unet.save_pretrained(root / "arc2face")
    config = json.loads((root / "arc2face" / "config.json").read_text())
    config = {k: v for k, v in config.items() if k in UNET_2024_KEYS or k == "_class_name"}
    config["_diffusers_version"] = "0.26.3"
    (root / "arc2face" / "config.json").write_text(json.dumps(config))

    vae = tiny_mod.tiny_vae().eval()
    vae.save_pretrained(root / "vae")
    weights = root / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    renamed = {}
    for key, value in state.items():
        for new, old in OLD_VAE_NAMES.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        renamed[key] = value
    assert any(".query." in k for k in renamed)
    save_file(renamed, weights)

    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(tiny_mod.SD15_SCHEDULER_CONFIG))
    return root, {"encoder": encoder, "unet": unet, "vae": vae}


@pytest.fixture(scope="module")
def loaded(era_folder):
    root, _ = era_folder
    return load_parts(root, torch.device("cpu"), torch.float32)


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module, cast=None):
    want, got = expected.state_dict(), actual.state_dict()
    assert set(want) == set(got)
    for key, value in want.items():
        value = value.to(cast).to(got[key].dtype) if cast is not None else value
        assert torch.equal(value, got[key]), key


def test_encoder_from_transformers4_fp16_bin_with_text_model_prefix(era_folder, loaded):
    _, modules = era_folder
    saved = torch.load(era_folder[0] / "encoder" / "pytorch_model.bin", weights_only=True)
    assert all(k.startswith("text_model.") for k in saved) and next(iter(saved.values())).dtype == torch.float16
    assert loaded.text_encoder.dtype == torch.float32
    assert_same_weights(modules["encoder"], loaded.text_encoder, cast=torch.float16)
    ids = torch.tensor([[0, 5, 9, 3] + [1] * 73])
    with torch.inference_mode():
        out = loaded.text_encoder(input_ids=ids).last_hidden_state
        ref = modules["encoder"].to(torch.float16).float()(input_ids=ids).last_hidden_state
    torch.testing.assert_close(out, ref)


def test_unet_from_a_2024_diffusers_config(era_folder, loaded):
    _, modules = era_folder
    assert loaded.unet.config.cross_attention_dim == modules["unet"].config.cross_attention_dim
    assert_same_weights(modules["unet"], loaded.unet)


def test_vae_with_old_attention_parameter_names(era_folder, loaded):
    _, modules = era_folder
    assert_same_weights(modules["vae"], loaded.vae)


def test_tokenizer_and_scheduler_from_sd15_files(loaded):
    assert loaded.tokenizer.model_max_length == 77
    assert loaded.scheduler_config["_class_name"] == "PNDMScheduler"
    assert loaded.lcm_lora is None


def test_generator_runs_on_the_era_folder(era_folder):
    import numpy as np

    from synthface.generation.config import GenerationConfig
    from synthface.generation.generator import Arc2FaceGenerator

    gen = Arc2FaceGenerator.from_folder(era_folder[0], GenerationConfig(height=64, width=64, steps=1), device="cpu")
    assert gen.generate(np.ones((1, 512), np.float32), [0]).shape == (1, 64, 64, 3)


def test_mismatched_unet_and_encoder_are_refused(era_folder, tmp_path):
    import shutil

    from synthface.errors import MissingModelError

    root = tmp_path / "mismatch"
    shutil.copytree(era_folder[0], root)
    tiny_mod.tiny_unet(cross_attention_dim=640).save_pretrained(root / "arc2face")
    with pytest.raises(MissingModelError, match="not a pair"):
        load_parts(root, torch.device("cpu"), torch.float32)


def test_lcm_lora_in_kohya_format_fuses_like_the_diffusers_format(tmp_path):
    """LoRA files circulate in diffusers (`unet.x.lora_A`) and kohya (`lora_unet_x.lora_down`, `.alpha`)
    key styles; both must fuse to the same UNet weights."""
    from diffusers import UNet2DConditionModel

    from synthface.generation.loading import apply_lcm_lora
    from synthface.models.tiny import init_tiny

    root = init_tiny(tmp_path / "m", with_lcm_lora=True, with_face_models=False)
    diffusers_file = root / "lcm-lora" / "pytorch_lora_weights.safetensors"
    kohya = {}
    for key, value in load_file(diffusers_file).items():
        module, kind = key[len("unet."):].rsplit(".lora_", 1)  # "down_blocks...to_q", "A.weight"
        name = "lora_unet_" + module.replace(".", "_")
        kohya[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        if kind.startswith("A"):
            kohya[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))  # alpha = rank: scale 1
    kohya_file = tmp_path / "kohya" / "pytorch_lora_weights.safetensors"
    kohya_file.parent.mkdir()
    save_file(kohya, kohya_file)

    base = UNet2DConditionModel.from_pretrained(root / "arc2face").state_dict()
    fused = {}
    for name, path in (("diffusers", diffusers_file), ("kohya", kohya_file)):
        unet = UNet2DConditionModel.from_pretrained(root / "arc2face")
        apply_lcm_lora(unet, path)
        fused[name] = unet.state_dict()
    assert set(fused["kohya"]) == set(base)
    changed = [k for k in base if not torch.equal(base[k], fused["diffusers"][k])]
    assert len(changed) == len(kohya) // 3  # every LoRA'd projection (down, up, alpha per module) changed
    for key in base:
        torch.testing.assert_close(fused["kohya"][key], fused["diffusers"][key])


def test_a_zero_byte_control_file_is_missing_not_loaded(tmp_path):
    """The loader and `models check` share one rule: a zero-byte file is an interrupted download."""
    from synthface.errors import MissingModelError
    from synthface.generation.loading import load_controlnet
    from synthface.models.layout import files_of_extra

    for f in files_of_extra("controlnet"):
        (tmp_path / f.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f.path).write_bytes(b"")
    with pytest.raises(MissingModelError, match="--controlnet"):
        load_controlnet(tmp_path, "cpu", torch.float32)
    assert not any(f.present_name(tmp_path) for f in files_of_extra("controlnet"))
