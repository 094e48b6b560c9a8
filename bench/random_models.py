"""Random-weight model folders for the generation benchmark.

Timing does not depend on weight values, so the benchmark builds the real
Arc2Face architecture (SD 1.5 UNet, CLIP ViT-L/14 text encoder, SD VAE) from
configs with random weights and writes it in the production folder layout, so
that the generator under test goes through the production loader. ``tiny``
reuses the model folder's own ``init-tiny`` writer (the CPU test config).
"""

from __future__ import annotations

import json
from pathlib import Path

from synthface.models.tiny import sd_unet_config, sd_vae_config

ARCHES = ("full", "tiny")

# SD 1.5 / Arc2Face UNet (arc2face/config.json): 320/640/1280/1280, cross-attention 768.
SD15_UNET = sd_unet_config(
    ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
)
# SD 1.5 VAE (vae/config.json).
SD15_VAE = sd_vae_config((128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)
# CLIP ViT-L/14 text tower (Arc2Face encoder/config.json).
CLIP_L14_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)


def default_size(arch: str) -> int:
    """Image side in pixels the benchmark uses by default for ``arch``."""
    return 512 if arch == "full" else 128


def write_random_model_folder(
    root: str | Path, arch: str = "full", device: str = "cpu", dtype=None, seed: int = 0, with_lcm_lora: bool = True,
    with_controls: bool = True,
) -> Path:
    """Write a random-weight Arc2Face model folder (production layout) at ``root``.

    ``full`` builds the real architecture (about 1.07 B parameters); modules are
    created directly on ``device`` (fast init on a GPU) and saved in ``dtype``.
    ``tiny`` is the folder ``synthface models init-tiny`` writes. With
    ``with_lcm_lora`` a random LoRA in the LCM-LoRA file format goes to
    ``lcm-lora/`` (the generator fuses it, so its cost per step is the base UNet's).
    ``with_controls`` adds a random pose ControlNet (from the UNet, as real
    ControlNets are made) and a random expression adapter, in their real layout.
    """
    import torch

    from synthface.models import tiny as tiny_models
    from synthface.models.layout import (
        CONTROLNET_DIR, ENCODER_DIR, EXP_ADAPTER_DIR, LCM_LORA_DIR, SCHEDULER_DIR, TOKENIZER_DIR, UNET_DIR, VAE_DIR,
    )

    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}, got {arch!r}")
    root = Path(root)
    if arch == "tiny":
        return tiny_models.init_tiny(
            root, with_lcm_lora=with_lcm_lora, with_face_models=False, with_controlnet=with_controls, with_exp_adapter=with_controls
        )

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root.mkdir(parents=True, exist_ok=True)
    dtype = dtype or torch.float32
    torch.manual_seed(seed)
    # The tokenizer only has to split the Arc2Face prompt; its ids fit the full
    # 49408-entry embedding table, so the encoder keeps its real size.
    tok_vocab = tiny_models.write_tiny_tokenizer(root / TOKENIZER_DIR)
    text_cfg = CLIPTextConfig(
        **CLIP_L14_TEXT, bos_token_id=tok_vocab - 2, eos_token_id=tok_vocab - 1, pad_token_id=tok_vocab - 1
    )
    with torch.device(device):
        encoder = CLIPTextModel(text_cfg).to(dtype).eval()
        # torch.save keeps tensor devices: store CPU tensors, as the real checkpoint does.
        tiny_models.write_legacy_text_encoder(encoder.to("cpu"), root / ENCODER_DIR, dtype=dtype)
        del encoder
        unet = UNet2DConditionModel(**SD15_UNET).to(dtype)
        unet.save_pretrained(root / UNET_DIR, safe_serialization=True)
        if with_controls:  # before the LoRA, which leaves wrapped layers in `unet`
            with torch.random.fork_rng(devices=[]):
                tiny_models.write_tiny_controlnet(unet, root / CONTROLNET_DIR, (16, 32, 96, 256), dtype=dtype)
                tiny_models.write_tiny_exp_adapter(unet, root / EXP_ADAPTER_DIR, dtype=dtype)
        if with_lcm_lora:
            # The published LCM-LoRA for SD 1.5 has rank 64.
            tiny_models.write_tiny_lcm_lora(unet.to("cpu"), root / LCM_LORA_DIR, rank=64)
        del unet
        vae = AutoencoderKL(**SD15_VAE).to(dtype)
        vae.save_pretrained(root / VAE_DIR, safe_serialization=True)
        del vae
    (root / SCHEDULER_DIR).mkdir(parents=True, exist_ok=True)
    (root / SCHEDULER_DIR / "scheduler_config.json").write_text(
        json.dumps(tiny_models.SD15_SCHEDULER_CONFIG, indent=2), encoding="utf-8"
    )
    names = ("arc2face", "encoder", "sd15") + (("lcm-lora",) if with_lcm_lora else ()) + (
        ("controlnet", "exp_adapter") if with_controls else ()
    )
    parts = {name: {"repo": "bench-random (full-size architecture)", "revision": None} for name in names}
    tiny_models.write_models_manifest(root, "bench-random", parts, {"seed": seed, "arch": arch})
    return root
