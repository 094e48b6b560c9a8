"""Load the generator's parts from a local model folder (real or tiny, same code)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthface.errors import MissingModelError
from synthface.models.check import read_manifest, require
from synthface.models.layout import files_of_extra
from synthface.models.layout import (
    CONTROLNET_DIR,
    ENCODER_DIR,
    EXP_ADAPTER_DIR,
    EXP_ADAPTER_WEIGHTS,
    LCM_LORA_DIR,
    LCM_LORA_WEIGHTS,
    MODEL_FILES,
    SCHEDULER_DIR,
    TOKENIZER_DIR,
    UNET_DIR,
    VAE_DIR,
)

log = logging.getLogger(__name__)

GENERATOR_PARTS = (UNET_DIR, ENCODER_DIR, VAE_DIR, TOKENIZER_DIR, SCHEDULER_DIR)


@dataclass
class LoadedParts:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    lcm_lora: Path | None  # weights file, when lcm-lora/ holds one
    manifest: dict | None


def _load(what: str, path: Path, root: Path, fn):
    try:
        return fn()
    except MissingModelError:
        raise
    except Exception as exc:  # noqa: BLE001  (tokenizers and torch.load raise bare Exception/UnpicklingError)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MissingModelError(
            f"could not load the {what} from {path} ({first}); the files look damaged or are not the "
            f"expected model: fetch them again with `synthface models download --to {root}`"
        ) from exc


def _quietly(fn):
    """Run ``fn`` without transformers' per-load progress bar (noise in CLI output and logs)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return fn()
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def lcm_lora_file(root: Path) -> Path | None:
    path = root / LCM_LORA_DIR / LCM_LORA_WEIGHTS
    return path if path.is_file() else None


def require_generator_files(root: str | Path) -> Path:
    """Raise MissingModelError naming the first missing file the generator needs (cheap, no imports)."""
    return require(root, [f.path for f in MODEL_FILES if f.required and f.path.split("/")[0] in GENERATOR_PARTS])


def load_parts(root: str | Path, device, dtype) -> LoadedParts:
    """Load UNet, VAE, text encoder, tokenizer and scheduler config from ``root``.

    Raises :class:`MissingModelError` naming the first missing file. The text
    encoder may be a transformers-4 ``pytorch_model.bin`` with ``text_model.``
    keys (Arc2Face's format); transformers maps it onto the current class.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = require_generator_files(root)

    tokenizer = _load("tokenizer", root / TOKENIZER_DIR, root, lambda: CLIPTokenizer.from_pretrained(root / TOKENIZER_DIR))
    text_encoder = _load(
        "Arc2Face text encoder",
        root / ENCODER_DIR,
        root,
        lambda: _quietly(lambda: CLIPTextModel.from_pretrained(root / ENCODER_DIR, dtype=dtype, attn_implementation="sdpa")),
    )
    unet = _load(
        "Arc2Face UNet", root / UNET_DIR, root, lambda: UNet2DConditionModel.from_pretrained(root / UNET_DIR, torch_dtype=dtype)
    )
    vae = _load("VAE", root / VAE_DIR, root, lambda: AutoencoderKL.from_pretrained(root / VAE_DIR, torch_dtype=dtype))
    sched_path = root / SCHEDULER_DIR / "scheduler_config.json"
    scheduler_config = _load("scheduler config", sched_path, root, lambda: json.loads(sched_path.read_text(encoding="utf-8")))

    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise MissingModelError(
            f"UNet cross-attention width {unet.config.cross_attention_dim} does not match the text encoder "
            f"width {text_encoder.config.hidden_size}: {root / UNET_DIR} and {root / ENCODER_DIR} are not a pair"
        )
    with torch.no_grad():
        for module in (unet, vae, text_encoder):
            module.to(device).eval().requires_grad_(False)
    return LoadedParts(unet, vae, text_encoder, tokenizer, scheduler_config, lcm_lora_file(root), read_manifest(root))


def apply_lcm_lora(unet, weights: Path) -> None:
    """Load the LCM-LoRA into ``unet`` and fuse it into the weights (no LoRA cost per step)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    def load():
        state, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(str(weights.parent), weight_name=weights.name)
        StableDiffusionLoraLoaderMixin.load_lora_into_unet(state, alphas, unet=unet, adapter_name="lcm")
        unet.fuse_lora(lora_scale=1.0)
        unet.unload_lora()  # keep the fused weights, drop the adapter modules

    _load("LCM-LoRA", weights.parent, weights.parent.parent, load)


def load_controlnet(root: str | Path, device, dtype):
    """Arc2Face's pose ControlNet from ``controlnet/`` (diffusers ControlNetModel), as the reference demo loads it."""
    from diffusers import ControlNetModel

    root = Path(root)
    _require_extra(root, "controlnet", "generation.pose is on")
    path = root / CONTROLNET_DIR
    controlnet = _load("pose ControlNet", path, root, lambda: ControlNetModel.from_pretrained(path, torch_dtype=dtype))
    controlnet.to(device).eval().requires_grad_(False)
    return controlnet


def load_expression_adapter(root: str | Path, parts: LoadedParts, scale: float) -> None:
    """Load ``exp_adapter/exp_adapter.bin`` into ``parts.unet`` with diffusers' public IP-Adapter API.

    As Arc2Face's demo: ``load_ip_adapter(models, subfolder="exp_adapter",
    weight_name="exp_adapter.bin", image_encoder_folder=None)`` (the FLAME
    vector is the "image embedding"; no image encoder), then
    ``set_ip_adapter_scale``. The loader needs a pipeline object; a
    StableDiffusionPipeline around our own modules serves (nothing is copied).
    """
    from diffusers import StableDiffusionPipeline

    root = Path(root)
    _require_extra(root, "exp-adapter", "generation.expression is on")

    def load():
        pipe = StableDiffusionPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
            scheduler=None, safety_checker=None, feature_extractor=None, image_encoder=None,
            requires_safety_checker=False,
        )
        pipe.load_ip_adapter(str(root), subfolder=EXP_ADAPTER_DIR, weight_name=EXP_ADAPTER_WEIGHTS, image_encoder_folder=None)
        pipe.set_ip_adapter_scale(scale)

    _load("expression adapter", root / EXP_ADAPTER_DIR / EXP_ADAPTER_WEIGHTS, root, lambda: _quietly(lambda: _diffusers_quietly(load)))


def _diffusers_quietly(fn):
    """Run ``fn`` without diffusers' notices that do not apply here (no image encoder by design)."""
    from diffusers.utils import logging as d_logging

    before = d_logging.get_verbosity()
    d_logging.set_verbosity_error()
    try:
        return fn()
    finally:
        d_logging.set_verbosity(before)


def _require_extra(root: Path, extra: str, why: str) -> None:
    for f in files_of_extra(extra):
        if f.present_name(root) is None:
            raise MissingModelError(
                f"{why} but {root / f.path} ({f.part}) is missing; get it with "
                f"`synthface models download --to {root} --{extra}` (from {f.repo}: {f.repo_path}) "
                f"or `synthface models init-tiny DIR --{extra}` for tiny test weights"
            )
