"""Config of the generation stage (`generation:` section)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from synthface.config import StrictModel

SchedulerName = Literal["dpmsolver++", "ddim", "euler", "euler_ancestral", "pndm", "unipc", "lcm"]


def _bare_off(value):
    return "off" if value is False else value  # YAML reads a bare `off` as false


Auto = Literal["auto"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
DEFAULT_COMPILE_CACHE = "~/.cache/synthface/torch-compile"


class PerfConfig(StrictModel):
    """Speed switches that do not change the output (beyond float rounding)."""

    channels_last: bool | Auto = Field("auto", description="NHWC memory format for UNet and VAE convolutions.")
    fuse_qkv: bool | Auto = Field(
        "auto", description="One matmul for q/k/v (self-attention) and k/v (cross-attention): diffusers fuse_qkv_projections."
    )
    attention: Literal["sdpa", "classic"] = Field(
        "sdpa", description="sdpa: torch scaled_dot_product_attention (flash/mem-efficient kernels); classic: explicit softmax(QK^T)V."
    )
    compile: bool | Auto = Field("auto", description="torch.compile the UNet (inductor).")
    compile_vae: bool = Field(False, description="Also torch.compile the VAE decoder (more compile time, ~6% of the FLOPs).")
    compile_mode: CompileMode = Field(
        "max-autotune",
        description="torch.compile mode; 'reduce-overhead' and 'max-autotune' capture CUDA graphs on CUDA.",
    )
    compile_fullgraph: bool = Field(True, description="Fail loudly on graph breaks instead of silently running eager pieces.")
    compile_backend: str = Field("inductor", min_length=1, description="torch.compile backend ('eager'/'aot_eager' only for debugging).")
    compile_cache_dir: str | None = Field(
        DEFAULT_COMPILE_CACHE,
        description="Where inductor keeps its FX-graph/autotune/triton caches, so compile time is paid once per machine; null = torch's default.",
    )
    inductor_tuning: bool = Field(
        False,
        description="diffusers' recommended inductor flags (conv 1x1 as matmul, coordinate-descent tuning): longer compile, sometimes faster.",
    )
    cudnn_benchmark: bool | Auto = Field("auto", description="Let cuDNN time its convolution algorithms for the fixed shapes.")
    tf32: bool | Auto = Field("auto", description="TF32 tensor cores for any fp32 matmul/conv (the fp16/bf16 path has none).")
    vae_slicing: bool = Field(False, description="Decode one image at a time (saves memory, costs speed).")
    vae_tiling: bool = Field(False, description="Decode in overlapping tiles (for huge images only; changes seams).")


class ReferenceConfig(StrictModel):
    """Reference mode (img2img / SDEdit, the Digi2Real route): each candidate starts from
    one of its identity's images instead of pure noise. Needs a bank made by
    `synthface ids from-images` (it lists each identity's images)."""

    enabled: bool = Field(False, description="Start every candidate from one of its identity's images.")
    strength: float = Field(
        0.6,
        gt=0.0,
        le=1.0,
        description="How far the image is noised before denoising (diffusers' img2img strength): the last "
        "int(steps x strength) steps run; 1.0 = from pure noise at the first step (the image then only seeds "
        "the latent), small = close to the image.",
    )
    image_embedding_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Identity conditioning: spherical interpolation from the class vector (0) towards the reference "
        "image's own embedding (1).",
    )
    images_root: str | None = Field(
        None, description="Folder of the identity folders; null = the one recorded in the bank (`ids from-images DIR`)."
    )
class ExpressionConfig(StrictModel):
    """Arc2Face's expression adapter: one 55-d FLAME vector per candidate (docs/generation.md)."""

    mode: Annotated[Literal["off", "neutral", "gaussian", "pool"], BeforeValidator(_bare_off)] = Field(
        "off",
        description="off (no adapter, today's images), neutral (all-zero FLAME vector), gaussian "
        "(per-group normal draws), pool (rows of an .npy file [M, 55]).",
    )
    scale: float = Field(1.0, ge=0.0, le=2.0, description="Adapter strength (diffusers set_ip_adapter_scale).")
    expression_std: float = Field(1.0, ge=0.0, le=5.0, description="gaussian: std of the 50 expression coefficients.")
    eyelid_std: float = Field(0.3, ge=0.0, le=2.0, description="gaussian: std of the 2 eyelid values (clipped to [0, 1]).")
    jaw_std: float = Field(
        0.1, ge=0.0, le=1.0, description="gaussian: std of the 3 jaw values (opening >= 0, the two others clipped to +-0.2)."
    )
    pool: str | None = Field(None, description="pool: an .npy file of FLAME vectors, float [M, 55].")

    @model_validator(mode="after")
    def _pool_needs_file(self):
        if self.mode == "pool" and not self.pool:
            raise ValueError("expression mode 'pool' needs generation.expression.pool (an .npy file [M, 55])")
        return self


class PoseConfig(StrictModel):
    """Arc2Face's pose ControlNet: one normal-map control image per candidate."""

    mode: Annotated[Literal["off", "pool"], BeforeValidator(_bare_off)] = Field("off", description="off, or pool (control images from generation.pose.pool).")
    pool: str | None = Field(
        None, description="pool: a folder of normal-map renders (PNG/JPEG, RGB, generation.height x width)."
    )
    scale: float = Field(1.0, ge=0.0, le=2.0, description="ControlNet conditioning scale (diffusers controlnet_conditioning_scale).")

    @model_validator(mode="after")
    def _pool_needs_folder(self):
        if self.mode == "pool" and not self.pool:
            raise ValueError("pose mode 'pool' needs generation.pose.pool (a folder of normal-map images)")
        return self


class GenerationConfig(StrictModel):
    """Arc2Face sampling settings. Defaults are Arc2Face's published ones."""

    scheduler: SchedulerName = Field(
        "dpmsolver++",
        description="Sampler: dpmsolver++ (DPM-Solver++ 2M multistep, default), ddim, euler, "
        "euler_ancestral, pndm, unipc; lcm is chosen automatically in LCM-LoRA mode.",
    )
    steps: int = Field(25, ge=1, le=200, description="Denoising steps (cost grows linearly).")
    guidance: float = Field(
        3.0, ge=1.0, le=20.0, description="Classifier-free guidance scale; 1.0 turns guidance (and its extra UNet pass) off."
    )
    guidance_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Guidance truncation: apply guidance only on the first this fraction of steps; "
        "later steps run the conditional pass alone.",
    )
    height: int = Field(512, ge=64, le=1024, multiple_of=8, description="Image height in pixels.")
    width: int = Field(512, ge=64, le=1024, multiple_of=8, description="Image width in pixels.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights/activations dtype; auto = float16 on CUDA, float32 on CPU."
    )
    device: str = Field("auto", description="auto (CUDA if available, else CPU), cpu, cuda, cuda:N.")
    batch_size: int = Field(8, ge=1, le=256, description="Images per UNet call (x2 with guidance).")
    lcm: Literal["auto", "on", "off"] = Field(
        "off",
        description="LCM-LoRA few-step mode: on needs lcm-lora/ in the model folder; auto uses it when present.",
    )
    lcm_steps: int = Field(4, ge=1, le=16, description="Steps in LCM-LoRA mode.")
    lcm_guidance: float = Field(1.0, ge=1.0, le=3.0, description="Guidance in LCM-LoRA mode (1.0 = none).")
    perf: PerfConfig = Field(default_factory=PerfConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    expression: ExpressionConfig = Field(default_factory=ExpressionConfig)
    pose: PoseConfig = Field(default_factory=PoseConfig)

    @field_validator("lcm", mode="before")
    @classmethod
    def _yaml_booleans(cls, value):
        # YAML reads a bare on/off (or yes/no, true/false) as a boolean.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @model_validator(mode="after")
    def _lcm_scheduler_only_with_lora(self):
        if self.scheduler == "lcm" and self.lcm == "off":
            raise ValueError("scheduler 'lcm' needs the LCM-LoRA: set generation.lcm to on or auto")
        return self
