"""The local model folder: what lives where, and where each part comes from.

One folder holds every weight a run needs (see docs/generation.md). Runs read
only this folder; `synthface models download` fills it from the Hugging Face
hub, `synthface models init-tiny` writes a tiny random-weight stand-in with the
same classes and file names.
"""

from __future__ import annotations

from pathlib import Path

from dataclasses import dataclass

ARC2FACE_REPO = "FoivosPar/Arc2Face"
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LCM_LORA_REPO = "latent-consistency/lcm-lora-sdv1-5"
# insightface's antelopev2 pack is distributed as a zip on GitHub; this hub repo
# mirrors its files one by one (override with `--detector-repo`).
ANTELOPEV2_REPO = "DIAMONIK7777/antelopev2"

# Folder-relative names (the layout fixed in docs/architecture.md).
UNET_DIR = "arc2face"
ENCODER_DIR = "encoder"
VAE_DIR = "vae"
TOKENIZER_DIR = "tokenizer"
SCHEDULER_DIR = "scheduler"
LCM_LORA_DIR = "lcm-lora"
CONTROLNET_DIR = "controlnet"  # Arc2Face's pose ControlNet (normal maps)
EXP_ADAPTER_DIR = "exp_adapter"  # Arc2Face's expression adapter (IP-Adapter on FLAME vectors)
EXP_ADAPTER_WEIGHTS = "exp_adapter.bin"
ARCFACE_ONNX = "arcface.onnx"
DETECTOR_ONNX = "scrfd_10g_bnkps.onnx"
MANIFEST = "synthface-models.json"

LCM_LORA_WEIGHTS = "pytorch_lora_weights.safetensors"

# The text prompt Arc2Face was trained with; the token `id` is the slot that
# receives the identity vector.
ARC2FACE_PROMPT = "photo of a id person"
ID_TOKEN = "id"
ID_DIM = 512


@dataclass(frozen=True)
class ModelFile:
    """One file of the folder: where it goes and where it comes from."""

    path: str  # relative to the folder root
    repo: str  # hub repo it is downloaded from
    repo_path: str  # path inside that repo
    part: str  # which component it belongs to (for messages)
    required: bool = True
    # Any of these names satisfies the file (e.g. safetensors or .bin weights).
    alternatives: tuple[str, ...] = ()
    # Optional parts: the `models download` / `init-tiny` flag that fetches them (without the dashes).
    extra: str | None = None

    def how_to_get(self) -> str:
        return f"`synthface models download --to DIR` (from {self.repo}: {self.repo_path})"

    def present_name(self, root: Path) -> str | None:
        """The name (``path`` or an alternative) under which this file is present in ``root``;
        None when absent. A zero-byte file is an interrupted download, not a model."""
        for name in (self.path, *self.alternatives):
            p = root / name
            if p.is_file() and p.stat().st_size > 0:
                return name
        return None


MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile(f"{UNET_DIR}/config.json", ARC2FACE_REPO, "arc2face/config.json", "Arc2Face UNet"),
    ModelFile(
        f"{UNET_DIR}/diffusion_pytorch_model.safetensors",
        ARC2FACE_REPO,
        "arc2face/diffusion_pytorch_model.safetensors",
        "Arc2Face UNet",
        alternatives=(f"{UNET_DIR}/diffusion_pytorch_model.bin",),
    ),
    ModelFile(f"{ENCODER_DIR}/config.json", ARC2FACE_REPO, "encoder/config.json", "Arc2Face text encoder"),
    ModelFile(
        f"{ENCODER_DIR}/pytorch_model.bin",
        ARC2FACE_REPO,
        "encoder/pytorch_model.bin",
        "Arc2Face text encoder",
        alternatives=(f"{ENCODER_DIR}/model.safetensors",),
    ),
    ModelFile(ARCFACE_ONNX, ARC2FACE_REPO, "arcface.onnx", "ArcFace recognizer (defines the identity space)"),
    ModelFile(f"{VAE_DIR}/config.json", SD15_REPO, "vae/config.json", "SD 1.5 VAE"),
    ModelFile(
        f"{VAE_DIR}/diffusion_pytorch_model.safetensors",
        SD15_REPO,
        "vae/diffusion_pytorch_model.safetensors",
        "SD 1.5 VAE",
        alternatives=(f"{VAE_DIR}/diffusion_pytorch_model.bin",),
    ),
    ModelFile(f"{TOKENIZER_DIR}/vocab.json", SD15_REPO, "tokenizer/vocab.json", "SD 1.5 CLIP tokenizer"),
    ModelFile(f"{TOKENIZER_DIR}/merges.txt", SD15_REPO, "tokenizer/merges.txt", "SD 1.5 CLIP tokenizer"),
    ModelFile(f"{TOKENIZER_DIR}/tokenizer_config.json", SD15_REPO, "tokenizer/tokenizer_config.json", "SD 1.5 CLIP tokenizer"),
    ModelFile(f"{TOKENIZER_DIR}/special_tokens_map.json", SD15_REPO, "tokenizer/special_tokens_map.json", "SD 1.5 CLIP tokenizer"),
    ModelFile(f"{SCHEDULER_DIR}/scheduler_config.json", SD15_REPO, "scheduler/scheduler_config.json", "SD 1.5 scheduler config"),
    ModelFile(DETECTOR_ONNX, ANTELOPEV2_REPO, DETECTOR_ONNX, "SCRFD-10G face detector (antelopev2)"),
    ModelFile(
        f"{LCM_LORA_DIR}/{LCM_LORA_WEIGHTS}",
        LCM_LORA_REPO,
        LCM_LORA_WEIGHTS,
        "LCM-LoRA (optional: few-step sampling)",
        required=False,
        extra="lcm-lora",
    ),
    ModelFile(
        f"{CONTROLNET_DIR}/config.json", ARC2FACE_REPO, "controlnet/config.json", "pose ControlNet (optional)",
        required=False, extra="controlnet",
    ),
    ModelFile(
        f"{CONTROLNET_DIR}/diffusion_pytorch_model.safetensors",
        ARC2FACE_REPO,
        "controlnet/diffusion_pytorch_model.safetensors",
        "pose ControlNet (optional)",
        required=False,
        alternatives=(f"{CONTROLNET_DIR}/diffusion_pytorch_model.bin",),
        extra="controlnet",
    ),
    ModelFile(
        f"{EXP_ADAPTER_DIR}/{EXP_ADAPTER_WEIGHTS}",
        ARC2FACE_REPO,
        f"exp_adapter/{EXP_ADAPTER_WEIGHTS}",
        "expression adapter (optional)",
        required=False,
        extra="exp-adapter",
    ),
)


def files_of_extra(extra: str) -> list[ModelFile]:
    """The layout files that a download/init-tiny flag adds (e.g. ``"controlnet"``)."""
    return [f for f in MODEL_FILES if f.extra == extra]

