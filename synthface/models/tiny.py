"""A tiny random-weight model folder with the real classes, file names and formats.

Tests, CI and the demo load it through the same code as the real weights, so
everything but the picture quality is exercised offline. The files are written
the way the real checkpoints are (see docs/generation.md):

- ``encoder/``: a transformers-4-era ``pytorch_model.bin`` whose state-dict keys
  start with ``text_model.`` (as Arc2Face ships it);
- ``tokenizer/``: ``vocab.json`` + ``merges.txt`` + the two JSON configs of SD 1.5,
  with a tiny CLIP byte-level BPE vocabulary in which the Arc2Face prompt
  words (``photo of a id person``) are single tokens;
- ``scheduler/``: SD 1.5's scheduler config (PNDM, scaled-linear betas);
- ``vae/``: a VAE with SD's 8x down-sampling, so image sizes mean the same;
- the two face ONNX models, written by the face stage;
- optionally ``controlnet/`` (a ControlNetModel made from the tiny UNet, saved
  with ``save_pretrained`` as Arc2Face's is) and ``exp_adapter/exp_adapter.bin``
  (an IP-Adapter state dict ``{"image_proj", "ip_adapter"}`` with a 55-d input,
  read by diffusers' ``load_ip_adapter`` like the real one). Their zero-initialised
  output layers get random values, so that they really change the images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from synthface.files import write_text_atomic
from synthface.models.layout import (
    ARC2FACE_PROMPT,
    CONTROLNET_DIR,
    EXP_ADAPTER_DIR,
    EXP_ADAPTER_WEIGHTS,
    ENCODER_DIR,
    LCM_LORA_DIR,
    LCM_LORA_WEIGHTS,
    MANIFEST,
    SCHEDULER_DIR,
    TOKENIZER_DIR,
    UNET_DIR,
    VAE_DIR,
)
from synthface.version import synthface_version

# Wide enough to hold a 512-d ID vector plus zero padding, like the real 768.
TINY_TEXT_WIDTH = 576
TINY_SEED = 1234

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"

# SD 1.5's scheduler/scheduler_config.json (values as published).
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def tiny_clip_vocab(words: list[str]) -> tuple[dict[str, int], list[str]]:
    """A CLIP BPE vocabulary: the 512 byte symbols, merges that build ``words``, specials.

    Every text still tokenizes (unknown words fall back to byte symbols); the
    given words become one token each (with CLIP's ``</w>`` end-of-word mark).
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab_tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        # Left-to-right merges: ranks grow along the word, so BPE rebuilds it.
        current = symbols[0]
        for nxt in symbols[1:]:
            merged = current + nxt
            if merged not in vocab_tokens:
                merges.append(f"{current} {nxt}")
                vocab_tokens.append(merged)
            current = merged
    vocab_tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab_tokens)}, merges


def write_tiny_tokenizer(folder: Path) -> int:
    """Write an SD-1.5-format CLIP tokenizer folder; returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    words = sorted(set(ARC2FACE_PROMPT.split()) | {"face", "photo", "portrait"})
    vocab, merges = tiny_clip_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    tok_config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2), encoding="utf-8")
    return len(vocab)


def tiny_text_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_TEXT_WIDTH,
        intermediate_size=2 * TINY_TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=TINY_TEXT_WIDTH,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def write_legacy_text_encoder(model, folder: Path, dtype=None) -> None:
    """Save a CLIPTextModel as transformers 4 did: ``pytorch_model.bin`` with ``text_model.`` keys.

    Arc2Face's ``encoder/`` is stored this way; writing the tiny one the same
    way keeps the loader honest about reading it.
    """
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in model.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        state[key] = value.to(dtype) if dtype is not None else value
    torch.save(state, folder / "pytorch_model.bin")
    config = model.config.to_dict()
    config.pop("transformers_version", None)
    config.pop("dtype", None)
    config.update(
        architectures=["CLIPTextModel"],
        model_type="clip_text_model",
        torch_dtype=str(dtype or torch.float32).replace("torch.", ""),
        transformers_version="4.34.1",
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def sd_unet_config(down_block_types, up_block_types, block_out_channels, layers_per_block: int, cross_attention_dim: int) -> dict:
    """``UNet2DConditionModel`` arguments of an SD-1.5-style UNet (4 latent channels, 64x64
    latents for 512 px, 8-wide attention heads, 32 norm groups) with the given blocks and widths.
    The tiny UNet here and the benchmark's full-size one are both made from it."""
    return dict(
        sample_size=64,  # 512 px / 8, as SD 1.5
        in_channels=4,
        out_channels=4,
        down_block_types=tuple(down_block_types),
        up_block_types=tuple(up_block_types),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def sd_vae_config(block_out_channels, layers_per_block: int, norm_num_groups: int) -> dict:
    """``AutoencoderKL`` arguments of SD's VAE layout (four levels: 8x down-sampling, 4 latent
    channels, SD's latent scaling) with the given widths."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        sample_size=512,
        scaling_factor=0.18215,
    )


def tiny_unet(cross_attention_dim: int = TINY_TEXT_WIDTH):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        **sd_unet_config(("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D"), (32, 64), 1, cross_attention_dim)
    )


def tiny_vae():
    from diffusers import AutoencoderKL

    # Four levels like SD's VAE (8x down-sampling), very few channels.
    return AutoencoderKL(**sd_vae_config((8, 8, 16, 16), layers_per_block=1, norm_num_groups=8))


def write_tiny_lcm_lora(unet, folder: Path, rank: int = 4) -> Path:
    """Write a random LoRA for ``unet`` (q/k/v/out projections) as ``pytorch_lora_weights.safetensors``.

    Saved in diffusers' LoRA key style; the loader reads the kohya key style
    (``lora_unet_*.lora_down``/``.alpha``) too (tested).
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    state = get_peft_model_state_dict(unet)
    # Non-zero B so the LoRA really changes the output.
    gen = torch.Generator().manual_seed(TINY_SEED + 7)
    state = {k: (torch.randn(v.shape, generator=gen) * 0.05 if "lora_B" in k else v) for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state, weight_name=LCM_LORA_WEIGHTS, safe_serialization=True)
    unet.delete_adapters("default")
    return folder / LCM_LORA_WEIGHTS


def write_tiny_controlnet(unet, folder: Path, conditioning_channels=(8, 8, 16, 16), dtype=None) -> Path:
    """A ControlNet with ``unet``'s encoder; its zero convolutions made random (else it does nothing).

    ``conditioning_channels``: the control-image encoder's widths (SD's ControlNets use 16, 32, 96, 256).
    """
    import torch
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(conditioning_channels))
    gen = torch.Generator().manual_seed(TINY_SEED + 11)
    zero_init = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_init:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, device="cpu") * 0.05)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen, device="cpu") * 0.01)
    if dtype is not None:
        controlnet.to(dtype)
    controlnet.save_pretrained(folder, safe_serialization=True)
    return folder


def write_tiny_exp_adapter(unet, folder: Path, flame_dim: int = 55, num_tokens: int = 4, dtype=None) -> Path:
    """An IP-Adapter state dict for ``unet`` whose image projection takes a ``flame_dim`` vector.

    Layout as diffusers' ``load_ip_adapter`` reads it: ``image_proj`` holds
    ``proj.weight/bias`` [num_tokens * width, flame_dim] and ``norm``; ``ip_adapter``
    holds ``{k}.to_k_ip.weight`` / ``{k}.to_v_ip.weight`` for each cross-attention
    layer, k = 1, 3, 5, ... in ``unet.attn_processors`` order.
    """
    import torch

    gen = torch.Generator().manual_seed(TINY_SEED + 13)
    width = int(unet.config.cross_attention_dim)

    def rand(*shape, fan_in):
        return torch.randn(shape, generator=gen, device="cpu") / fan_in**0.5

    image_proj = {
        "proj.weight": rand(num_tokens * width, flame_dim, fan_in=flame_dim),
        "proj.bias": torch.zeros(num_tokens * width, device="cpu"),
        "norm.weight": torch.ones(width, device="cpu"),
        "norm.bias": torch.zeros(width, device="cpu"),
    }
    modules = dict(unet.named_modules())
    ip_adapter, key = {}, 1
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        hidden = modules[name[: -len(".processor")]].to_q.in_features
        ip_adapter[f"{key}.to_k_ip.weight"] = rand(hidden, width, fan_in=width)
        ip_adapter[f"{key}.to_v_ip.weight"] = rand(hidden, width, fan_in=width)
        key += 2
    folder.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        image_proj = {k: v.to(dtype) for k, v in image_proj.items()}
        ip_adapter = {k: v.to(dtype) for k, v in ip_adapter.items()}
    torch.save({"image_proj": image_proj, "ip_adapter": ip_adapter}, folder / EXP_ADAPTER_WEIGHTS)
    return folder / EXP_ADAPTER_WEIGHTS


def write_models_manifest(root: Path, origin: str, parts: dict, extra: dict | None = None) -> None:
    """Write the model folder's synthface-models.json: where its parts came from (``origin``) and who wrote it."""
    data = {
        "origin": origin,
        "written_by": f"synthface {synthface_version()}",
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parts": parts,
        **(extra or {}),
    }
    write_text_atomic(root / MANIFEST, json.dumps(data, indent=2))


def init_tiny(
    root: str | Path,
    with_lcm_lora: bool = False,
    with_face_models: bool = True,
    with_controlnet: bool = False,
    with_exp_adapter: bool = False,
) -> Path:
    """Write a tiny random-weight model folder at ``root``; returns its path.

    Deterministic: the same call writes the same weights.
    """
    import torch

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(TINY_SEED)

    vocab_size = write_tiny_tokenizer(root / TOKENIZER_DIR)

    from transformers import CLIPTextModel

    encoder = CLIPTextModel(tiny_text_config(vocab_size)).eval()
    write_legacy_text_encoder(encoder, root / ENCODER_DIR)

    unet = tiny_unet(encoder.config.hidden_size)
    unet.save_pretrained(root / UNET_DIR, safe_serialization=True)
    tiny_vae().save_pretrained(root / VAE_DIR, safe_serialization=True)

    (root / SCHEDULER_DIR).mkdir(parents=True, exist_ok=True)
    (root / SCHEDULER_DIR / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG, indent=2), encoding="utf-8")

    parts = {
        "arc2face": {"repo": "tiny-random", "revision": None},
        "encoder": {"repo": "tiny-random", "revision": None},
        "sd15": {"repo": "tiny-random (SD 1.5 scheduler config as published)", "revision": None},
    }
    # Before the LoRA (which leaves wrapped layers in `unet`), under a forked RNG:
    # adding them changes no other file.
    with torch.random.fork_rng():
        if with_controlnet:
            write_tiny_controlnet(unet, root / CONTROLNET_DIR)
            parts["controlnet"] = {"repo": "tiny-random", "revision": None}
        if with_exp_adapter:
            write_tiny_exp_adapter(unet, root / EXP_ADAPTER_DIR)
            parts["exp_adapter"] = {"repo": "tiny-random", "revision": None}
    if with_lcm_lora:
        write_tiny_lcm_lora(unet, root / LCM_LORA_DIR)
        parts["lcm-lora"] = {"repo": "tiny-random", "revision": None}

    if with_face_models:
        try:
            from synthface.faces.tiny import write_tiny_face_models
        except ImportError as exc:
            raise ImportError(
                "init-tiny needs synthface.faces.tiny.write_tiny_face_models (the face stage's tiny "
                f"ONNX writer) to write arcface.onnx and scrfd_10g_bnkps.onnx, and it is not available: {exc}"
            ) from exc
        write_tiny_face_models(root)
        parts["faces"] = {"repo": "tiny-random", "revision": None}

    write_models_manifest(root, "tiny-random", parts, {"seed": TINY_SEED})
    # the same sha256/size records as a download, so tests run the checks real folders get
    from synthface.models.integrity import record_folder

    record_folder(root, source="tiny-random")
    return root
