"""The batched Arc2Face generator: identity vectors + seeds in, uint8 RGB images out.

Built from diffusers/transformers parts (not a diffusers pipeline) so that a
batch can mix identities and every image keeps its own random streams:

- each image's initial latent is drawn from its own ``torch.Generator`` seeded
  with its seed (on the CPU, in float32, then moved), and any noise a sampler
  adds between steps comes from that same generator, so an image does not
  depend on the batch it lands in;
- classifier-free guidance runs the unconditional and conditional halves in
  one UNet call; guidance 1.0 (or a step past the guidance fraction) runs the
  conditional half alone.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synthface.errors import ConfigError, InputDataError, MissingModelError
from synthface.generation.config import GenerationConfig
from synthface.models.layout import ID_DIM, LCM_LORA_DIR, LCM_LORA_REPO, LCM_LORA_WEIGHTS

log = logging.getLogger(__name__)

SCHEDULERS = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def resolve_device(name: str | None):
    import torch

    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"generation.device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"generation.device: {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"generation.device: {name!r} requested but CUDA is not available on this machine")
    return device


def resolve_dtype(name, device):
    import torch

    if name is None or name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(name, torch.dtype):
        dtype = name
    elif name in _DTYPES:
        dtype = getattr(torch, _DTYPES[name])
    else:
        raise ConfigError(f"generation.dtype: unknown dtype {name!r} (auto, float32, float16, bfloat16)")
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError("generation.dtype: float16 needs a CUDA device; use float32 or bfloat16 on the CPU")
    return dtype


def guided_steps(steps: int, guidance: float, fraction: float) -> int:
    """How many leading steps run with guidance (0 when guidance is 1.0)."""
    if guidance == 1.0:
        return 0
    return max(1, math.ceil(fraction * steps - 1e-9))


def validate_id_vectors(id_vectors, seeds) -> np.ndarray:
    vectors = np.asarray(id_vectors)
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[1] != ID_DIM:
        raise InputDataError(
            f"identity vectors must have shape [B, {ID_DIM}] (ArcFace embeddings), got {tuple(np.shape(id_vectors))}"
        )
    if not np.issubdtype(vectors.dtype, np.floating):
        raise InputDataError(f"identity vectors must be floating point, got {vectors.dtype}")
    vectors = vectors.astype(np.float32)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise InputDataError(f"identity vectors hold NaN or inf values (rows {np.flatnonzero(bad)[:10].tolist()})")
    zero = np.linalg.norm(vectors, axis=1) < 1e-12
    if zero.any():
        raise InputDataError(f"identity vectors of zero length cannot be normalised (rows {np.flatnonzero(zero)[:10].tolist()})")
    if len(seeds) != len(vectors):
        raise InputDataError(f"got {len(vectors)} identity vectors but {len(seeds)} seeds; pass one seed per image")
    for s in seeds:
        if not (0 <= int(s) < 2**64):
            raise InputDataError(f"seed {s} out of range: seeds are integers in [0, 2**64)")
    return vectors


class Arc2FaceGenerator:
    """Arc2Face sampler over a batch of (identity vector, seed) pairs."""

    def __init__(self, parts, cfg: GenerationConfig, device, dtype, models_dir: Path, use_lcm: bool):
        import diffusers

        from synthface.generation.conditioning import IdConditioner
        from synthface.generation.speed import optimize_modules

        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        self.models_dir = Path(models_dir)
        self.parts = parts
        self.use_lcm = use_lcm
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
        self.conditioner = IdConditioner(parts.tokenizer, parts.text_encoder)

        scheduler_name = "lcm" if use_lcm else cfg.scheduler
        self.scheduler_name = scheduler_name
        cls_name, overrides = SCHEDULERS[scheduler_name]
        self._scheduler_cls = getattr(diffusers, cls_name)
        self._scheduler_config = {**parts.scheduler_config, **overrides}
        self.steps = cfg.lcm_steps if use_lcm else cfg.steps
        self.guidance = cfg.lcm_guidance if use_lcm else cfg.guidance
        self.guided_steps = guided_steps(self.steps, self.guidance, cfg.guidance_fraction)
        # The latent grid: SD's VAE halves the size once per extra block.
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if cfg.height % self.vae_scale or cfg.width % self.vae_scale:
            raise ConfigError(
                f"generation.height/width must be multiples of {self.vae_scale} for this VAE, got {cfg.height}x{cfg.width}"
            )
        if cfg.reference.enabled and int(self.steps * cfg.reference.strength) < 1:
            raise ConfigError(
                f"generation.reference.strength {cfg.reference.strength} x {self.steps} steps leaves no denoising "
                f"step; raise the strength to at least {1 / self.steps:.3g} or the steps"
            )
        self.perf = optimize_modules(self.unet, self.vae, self.text_encoder, cfg.perf, device)
        self._load_controls()
        # Rows of the most recent UNet calls (tests count them); bounded for long-running workers.
        self.unet_batch_sizes: deque[int] = deque(maxlen=4096)

    # ------------------------------------------------------------------ loading
    def _load_controls(self) -> None:
        """The pose ControlNet and the expression adapter, when their config sections are on.

        After the perf switches: those set the UNet's attention processors, and
        the adapter installs its own (IP-Adapter) processors on top.
        """
        from synthface.generation.loading import load_controlnet, load_expression_adapter

        self.controlnet = None
        if self.cfg.pose.mode != "off":
            self.controlnet = load_controlnet(self.models_dir, self.device, self.dtype)
        self.expression_adapter = self.cfg.expression.mode != "off"
        if self.expression_adapter:
            load_expression_adapter(self.models_dir, self.parts, self.cfg.expression.scale)

    @classmethod
    def from_folder(cls, models_dir, cfg: GenerationConfig | None = None, device=None, dtype=None) -> Arc2FaceGenerator:
        """Load every part from the local model folder ``models_dir``.

        ``device``/``dtype`` override ``cfg.device``/``cfg.dtype`` (strings or torch objects).
        """
        import torch

        from synthface.generation.loading import apply_lcm_lora, load_parts

        cfg = cfg or GenerationConfig()
        device = resolve_device(str(device) if device is not None else cfg.device)
        dtype = resolve_dtype(dtype if dtype is not None else cfg.dtype, device)
        root = Path(models_dir)
        parts = load_parts(root, device, dtype)

        # scheduler 'lcm' (allowed with lcm on/auto) only makes sense on the LCM-LoRA'd UNet
        if (cfg.lcm == "on" or cfg.scheduler == "lcm") and parts.lcm_lora is None:
            why = "generation.lcm is on" if cfg.lcm == "on" else "generation.scheduler is lcm"
            fixes = (["generation.lcm=off"] if cfg.lcm == "on" else []) + (
                ["another generation.scheduler"] if cfg.scheduler == "lcm" else []
            )
            fix = "set " + " and ".join(fixes)
            raise MissingModelError(
                f"{why} but {root / LCM_LORA_DIR / LCM_LORA_WEIGHTS} is missing; get it with "
                f"`synthface models download --to {root} --lcm-lora` (from {LCM_LORA_REPO}) or {fix}"
            )
        use_lcm = cfg.lcm == "on" or (cfg.lcm == "auto" and parts.lcm_lora is not None)
        if use_lcm:
            apply_lcm_lora(parts.unet, parts.lcm_lora)
            parts.unet.to(device)  # LoRA merges keep the weight dtype
        with torch.no_grad():
            return cls(parts, cfg, device, dtype, root, use_lcm)

    # --------------------------------------------------------------- describing
    def describe(self) -> dict:
        """Settings and model identity, for sample metadata and dataset manifests."""
        manifest = self.parts.manifest or {}
        return {
            "model": "arc2face",
            "models_dir": str(self.models_dir),
            "models_origin": manifest.get("origin", "unknown"),
            "model_parts": manifest.get("parts", {}),
            "scheduler": self.scheduler_name,
            "steps": self.steps,
            "guidance": self.guidance,
            "guidance_fraction": self.cfg.guidance_fraction,
            "guided_steps": self.guided_steps,
            "lcm_lora": self.use_lcm,
            "height": self.cfg.height,
            "width": self.cfg.width,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "batch_size": self.cfg.batch_size,
            "perf": self.perf.as_dict(),
            # present only when on, so that plain runs describe themselves as before
            **({"expression": {"adapter_scale": self.cfg.expression.scale}} if self.expression_adapter else {}),
            **({"pose": {"controlnet_scale": self.cfg.pose.scale}} if self.controlnet is not None else {}),
            **({"reference": self.cfg.reference.model_dump(mode="json")} if self.cfg.reference.enabled else {}),
        }

    # --------------------------------------------------------------- sampling
    def new_scheduler(self):
        """A fresh scheduler (multistep samplers keep per-run state)."""
        scheduler = self._scheduler_cls.from_config(self._scheduler_config)
        scheduler.set_timesteps(self.steps, device=self.device)
        return scheduler

    def initial_latents(self, seeds: Sequence[int]):
        """One latent per seed, each from its own CPU generator; returns (latents, generators)."""
        import torch

        shape = (self.unet.config.in_channels, self.cfg.height // self.vae_scale, self.cfg.width // self.vae_scale)
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        latents = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        return latents.to(self.device, self.dtype), generators

    def generate(self, id_vectors, seeds: Sequence[int], *, expression=None, pose=None, reference_images=None) -> np.ndarray:
        """Images for each (identity vector, seed) pair: uint8 [B, H, W, 3].

        ``id_vectors`` float32 [B, 512] (normalised here); ``seeds`` one int per image.
        With ``generation.expression`` on, ``expression`` is one 55-d FLAME vector
        per image [B, 55]; with ``generation.pose`` on, ``pose`` is one normal-map
        control image per image, uint8 [B, H, W, 3] (see generation/controls.py).
        ``reference_images`` (optional, one uint8 H x W x 3 RGB array per pair, any
        size): start each image from its reference, VAE-encoded and noised to
        ``generation.reference.strength`` (diffusers' img2img scheme) instead of
        from pure noise. The image for a pair does not depend on B or on the other pairs.
        """
        seeds = [int(s) for s in seeds]
        vectors = validate_id_vectors(id_vectors, seeds)
        expression, pose = self._check_controls(len(vectors), expression, pose)
        references = None
        if reference_images is not None:
            references = self.prepare_references(reference_images, len(vectors))
        out = np.empty((len(vectors), self.cfg.height, self.cfg.width, 3), dtype=np.uint8)
        step = self.cfg.batch_size
        for start in range(0, len(vectors), step):
            stop = min(start + step, len(vectors))
            out[start:stop] = self._generate_batch(
                vectors[start:stop],
                seeds[start:stop],
                None if expression is None else expression[start:stop],
                None if pose is None else pose[start:stop],
                None if references is None else references[start:stop],
            )
        return out

    def _check_controls(self, n: int, expression, pose):
        from synthface.generation.controls import FLAME_DIM

        if expression is not None and not self.expression_adapter:
            raise ConfigError("expression vectors were passed but generation.expression.mode is off (no adapter loaded)")
        if expression is None and self.expression_adapter:
            raise InputDataError(f"generation.expression is on: pass one {FLAME_DIM}-d FLAME vector per image (expression=[B, {FLAME_DIM}])")
        if pose is not None and self.controlnet is None:
            raise ConfigError("pose control images were passed but generation.pose.mode is off (no ControlNet loaded)")
        if pose is None and self.controlnet is not None:
            raise InputDataError("generation.pose is on: pass one control image per image (pose=uint8 [B, H, W, 3])")
        if expression is not None:
            expression = np.asarray(expression)
            if expression.shape != (n, FLAME_DIM) or not np.issubdtype(expression.dtype, np.floating):
                raise InputDataError(f"expression must be float [{n}, {FLAME_DIM}], got {expression.dtype} {tuple(expression.shape)}")
            if not np.isfinite(expression).all():
                raise InputDataError("expression vectors hold NaN or inf values")
            expression = expression.astype(np.float32)
        if pose is not None:
            pose = np.asarray(pose)
            want = (n, self.cfg.height, self.cfg.width, 3)
            if pose.shape != want or pose.dtype != np.uint8:
                raise InputDataError(f"pose control images must be uint8 {list(want)}, got {pose.dtype} {list(pose.shape)}")
        return expression, pose

    def prepare_references(self, images, count: int) -> np.ndarray:
        """Reference images -> float32 [B, 3, H, W] in [-1, 1] at the output size (as diffusers'
        VaeImageProcessor does it: lanczos resize, /255, x2 - 1)."""
        from PIL import Image

        from synthface.faces.images import image_problem

        if len(images) != count:
            raise InputDataError(f"got {len(images)} reference images for {count} identity vectors; pass one per image")
        h, w = self.cfg.height, self.cfg.width
        out = np.empty((count, 3, h, w), dtype=np.float32)
        for i, image in enumerate(images):
            problem = image_problem(image)
            if problem is not None:
                raise InputDataError(f"reference image {i}: {problem}")
            if image.shape[:2] != (h, w):
                image = np.asarray(Image.fromarray(image).resize((w, h), Image.LANCZOS))
            out[i] = (image.astype(np.float32) / 255.0 * 2.0 - 1.0).transpose(2, 0, 1)
        return out

    def reference_timesteps(self, scheduler):
        """The img2img schedule: skip the first steps so that int(steps x strength) run."""
        # strength <= 1 (config), and __init__ refused a strength that leaves no step
        t_start = self.steps - int(self.steps * self.cfg.reference.strength)
        timesteps = scheduler.timesteps[t_start * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        return timesteps

    def reference_latents(self, references: np.ndarray, generators, scheduler, timestep):
        """VAE-encode the references, sample each latent and noise it to ``timestep``,
        every draw from the image's own generator (posterior sample first, then noise)."""
        import torch

        x = torch.from_numpy(references).to(self.device, self.dtype)
        dist = self.vae.encode(x).latent_dist
        shape = tuple(dist.mean.shape[1:])
        eps = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        latents = (dist.mean + dist.std * eps.to(self.device, self.dtype)) * self.vae.config.scaling_factor
        noise = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        return scheduler.add_noise(latents, noise.to(self.device, self.dtype), timestep.repeat(len(generators)))

    def _generate_batch(
        self, vectors: np.ndarray, seeds: list[int], expression=None, pose=None, references: np.ndarray | None = None
    ) -> np.ndarray:
        import torch

        with torch.inference_mode():
            cond = self.conditioner.encode(torch.from_numpy(vectors)).to(self.dtype)
            batch = cond.shape[0]
            context_guided = None
            if self.guided_steps:
                uncond = self.conditioner.unconditional().to(self.dtype).expand(batch, -1, -1)
                context_guided = torch.cat([uncond, cond])

            scheduler = self.new_scheduler()
            if references is None:
                timesteps = scheduler.timesteps
                latents, generators = self.initial_latents(seeds)
                latents = latents * scheduler.init_noise_sigma
                n_guided = self.guided_steps
            else:
                timesteps = self.reference_timesteps(scheduler)
                generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
                latents = self.reference_latents(references, generators, scheduler, timesteps[:1])
                n_guided = guided_steps(len(timesteps), self.guidance, self.cfg.guidance_fraction)
            step_kwargs = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
            controls = self._control_inputs(expression, pose)

            for i, t in enumerate(timesteps):
                guided = i < n_guided
                model_in = torch.cat([latents, latents]) if guided else latents
                model_in = scheduler.scale_model_input(model_in, t)
                self.unet_batch_sizes.append(model_in.shape[0])
                context = context_guided if guided else cond
                extra = self._control_kwargs(controls, model_in, t, context, guided) if controls else {}
                noise = self.unet(model_in, t, encoder_hidden_states=context, **extra).sample
                if guided:
                    noise_uncond, noise_cond = noise.chunk(2)
                    noise = noise_uncond + self.guidance * (noise_cond - noise_uncond)
                latents = scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
            return self.decode(latents)

    def _control_inputs(self, expression, pose) -> dict:
        """Tensors of the batch's controls, for the conditional rows and for [uncond; cond] rows.

        As diffusers' pipelines do it: the adapter's unconditional embedding is a
        zero vector (Arc2Face's demo builds ``cat([zeros, flame])``); the
        ControlNet sees the same control image in both halves; a control image
        is RGB scaled to [0, 1] in float32, then cast.
        """
        import torch

        controls = {}
        if expression is not None:
            e = torch.from_numpy(expression).to(self.device, self.dtype)[:, None, :]  # [B, 1, 55]
            controls["expression"] = (e, torch.cat([torch.zeros_like(e), e]))
        if pose is not None:
            c = (torch.from_numpy(pose).permute(0, 3, 1, 2).float() / 255.0).to(self.device, self.dtype)
            controls["pose"] = (c, torch.cat([c, c]))
        return controls

    def _control_kwargs(self, controls: dict, model_in, t, context, guided: bool) -> dict:
        """Extra UNet arguments of one step: adapter embeddings, ControlNet residuals."""
        extra = {}
        if "expression" in controls:
            extra["added_cond_kwargs"] = {"image_embeds": [controls["expression"][guided]]}
        if "pose" in controls:
            down, mid = self.controlnet(
                model_in, t, encoder_hidden_states=context, controlnet_cond=controls["pose"][guided],
                conditioning_scale=self.cfg.pose.scale, guess_mode=False, return_dict=False,
            )
            extra["down_block_additional_residuals"] = down
            extra["mid_block_additional_residual"] = mid
        return extra

    def decode(self, latents) -> np.ndarray:
        """VAE-decode latents to uint8 [B, H, W, 3]."""
        import torch

        scaling = self.vae.config.scaling_factor
        images = self.vae.decode(latents.to(self.dtype) / scaling).sample
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        images = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        return images.cpu().numpy()
