"""Generation throughput benchmark: the reference Arc2Face pipeline (A) against our generator (B).

One run, one process, one model folder:

- (A) the way Arc2Face's README samples: diffusers ``StableDiffusionPipeline``
  with DPM-Solver++ multistep, ``num_images_per_prompt=4``, one identity per
  call, ``prompt_embeds`` from the Arc2Face conditioning;
- (B) ``Arc2FaceGenerator`` loaded from the same folder through the production
  loader, at the same settings, over a batch-size sweep, with its default
  ``generation.perf`` switches;
- the best B row again after a dynamo reset: compile time with warm on-disk caches;
- rows that toggle one perf switch at a time (and the other dtype), all of
  which keep the output the same up to rounding;
- separately, rows that change the output (fewer steps, guidance truncation,
  no guidance, LCM): their speed is shown but never enters B/A.

Warm-up (the first call of each shape, torch.compile included) is timed on its
own and excluded from images/s. Model weights are random unless ``models_dir``
points at real ones: timing does not depend on weight values.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.random_models import default_size, write_random_model_folder
from bench.runner import cpu_seconds, load_average, resolve_device, resolve_dtype, write_result
from synthface.errors import ConfigError

# The issue's FLOP budget for one 512x512 image with SD 1.5 (per UNet pass, per VAE decode).
NOMINAL_UNET_TFLOP_512 = 0.84
NOMINAL_VAE_TFLOP_512 = 2.5
REFERENCE_IMAGES_PER_PROMPT = 4

PARTS = ("reference", "sweep", "cache", "dtype", "switches", "output", "controls")
DEFAULT_PARTS = PARTS[:-1]  # controls on request: extra weights to write and four more rows
# One toggle per perf switch; each row flips it against the resolved default.
SWITCHES = ("compile", "compile_mode", "fuse_qkv", "channels_last", "attention", "compile_vae", "vae_slicing", "inductor_tuning", "cudnn_tf32")
# Output-changing rows: name -> generation-config overrides.
OUTPUT_ROWS = ("steps", "guidance_fraction", "no_guidance", "lcm", "reference")
REFERENCE_ROW_STRENGTH = 0.6  # generation.reference.strength of the reference-mode row (its default)


@dataclass
class BenchOptions:
    arch: str = "full"  # "full" (real architecture) or "tiny" (CPU test config)
    device: str = "auto"
    dtype: str = "auto"
    steps: int = 25
    guidance: float = 3.0
    size: int | None = None  # image side in pixels; None = 512 full / 128 tiny
    batch_sizes: tuple[int, ...] | None = None  # None = (4, 8, 16, 32) on CUDA, (4, 8) elsewhere
    images: int = 32  # timed images per row (rounded up to whole calls)
    parts: tuple[str, ...] = DEFAULT_PARTS
    switches: tuple[str, ...] | None = None  # None = all applicable on this device
    outputs: tuple[str, ...] = OUTPUT_ROWS
    fewer_steps: int = 15
    truncate_fraction: float = 0.5
    models_dir: str | None = None  # None = write a random-weight folder
    work_dir: str | None = None  # where the random folder goes (temp by default)
    overrides: tuple[str, ...] = ()  # extra --set generation.* overrides for every B row
    seed: int = 0
    json_path: str | None = None
    threads: int | None = None  # torch CPU threads (None: torch's choice)


@dataclass
class Row:
    group: str  # reference | generator | dtype | switch | output-changing
    name: str
    batch_size: int
    dtype: str
    steps: int
    guidance: float
    unet_passes_per_image: float
    images: int = 0
    seconds: float = 0.0
    warmup_s: float = 0.0
    load_s: float = 0.0
    peak_mem_gib: float | None = None
    call_s: list[float] = field(default_factory=list)
    images_per_s: float = 0.0
    ms_per_image: float = 0.0
    cpu_ms_per_image: float = 0.0  # CPU time of this process: reads a wall time taken on a loaded machine
    tflop_per_image: float = 0.0
    tflops_per_s: float = 0.0
    vs_reference: float | None = None
    perf: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    error: str | None = None


# --------------------------------------------------------------------------- helpers


def _sync(device) -> None:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device) -> None:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device) -> float | None:
    import torch

    if getattr(device, "type", device) == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def _free(device) -> None:
    import torch

    # Each row compiles its own modules: drop dynamo's code cache so earlier rows'
    # graphs neither count against its recompile limit nor stay in memory.
    torch._dynamo.reset()
    gc.collect()
    if getattr(device, "type", device) == "cuda":
        torch.cuda.empty_cache()


def time_calls(call: Callable[[int], Any], n_calls: int, images_per_call: int, device) -> dict[str, float]:
    """Warm up with one call (timed alone), then time ``n_calls`` calls.

    ``call(i)`` runs the i-th call; the warm-up is call -1.
    """
    _sync(device)
    start = time.perf_counter()
    call(-1)
    _sync(device)
    warmup = time.perf_counter() - start
    _reset_peak(device)
    call_s = []
    cpu0, start = cpu_seconds(), time.perf_counter()
    for i in range(n_calls):
        t0 = time.perf_counter()
        call(i)
        _sync(device)  # per-call times show the spread; the total is what images/s uses
        call_s.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu0
    images = n_calls * images_per_call
    return {
        "call_s": call_s,
        "warmup_s": warmup,
        "seconds": seconds,
        "images": images,
        "images_per_s": images / seconds,
        "ms_per_image": 1000.0 * seconds / images,
        "cpu_ms_per_image": 1000.0 * cpu / images,
        "peak_mem_gib": _peak_gib(device),
    }


def unet_passes(steps: int, guidance: float, guidance_fraction: float = 1.0) -> float:
    """UNet passes per image: one per step, plus the unconditional pass on the steps the
    generator guides (its own count, ``guided_steps``)."""
    from synthface.generation.generator import guided_steps

    return float(steps + guided_steps(steps, guidance, guidance_fraction))


def nominal_tflop(passes: float, height: int, width: int) -> float:
    """The issue's FLOP count (0.84 TFLOP per UNet pass, 2.5 per VAE decode at 512²), scaled by pixels."""
    scale = height * width / 512**2
    return (NOMINAL_UNET_TFLOP_512 * passes + NOMINAL_VAE_TFLOP_512) * scale


def count_flops(unet, vae, height: int, width: int, context_dim: int, device, dtype) -> dict[str, float]:
    """FLOPs of one UNet pass and one VAE decode for one image, counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    latent = torch.randn(1, 4, height // 8, width // 8, device=device, dtype=dtype)
    context = torch.randn(1, 77, context_dim, device=device, dtype=dtype)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            unet(latent, torch.tensor([500], device=device), context)
        unet_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            vae.decode(latent)
        vae_flops = counter.get_total_flops()
    return {"unet_pass_tflop": unet_flops / 1e12, "vae_decode_tflop": vae_flops / 1e12}


def identity_vectors(n: int, seed: int):
    import numpy as np

    vectors = np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --------------------------------------------------------------------------- the generator under test


def generation_config(data: dict[str, Any], overrides: Iterable[str] = (), changes: dict[str, Any] | None = None):
    """A validated GenerationConfig: ``data``, then ``generation.*`` overrides, then a row's ``changes``."""
    from synthface.config import apply_overrides, validate
    from synthface.generation.config import GenerationConfig

    stripped = []
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if not key.startswith("generation."):
            raise ConfigError(f"--set {key}: the generation benchmark takes generation.* keys only")
        stripped.append(text.strip()[len("generation.") :])
    merged = _deep_merge(apply_overrides(data, stripped), changes or {})
    return validate(GenerationConfig, merged, source="bench generate")


def _deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def control_inputs(cfg, batch_size: int, seed: int) -> dict[str, Any]:
    """The generator's control arguments for a timed call: random FLAME vectors, rendered normal maps."""
    import numpy as np

    from synthface.generation.pose_maps import render_normal_map

    kwargs: dict[str, Any] = {}
    if cfg.expression.mode != "off":
        kwargs["expression"] = np.random.default_rng(seed).normal(0, 1, (batch_size, 55)).astype(np.float32)
    if cfg.pose.mode != "off":
        yaws = np.linspace(-45, 45, batch_size)
        kwargs["pose"] = np.stack([render_normal_map(cfg.height, yaw) for yaw in yaws])
    return kwargs


def load_generator(models_dir: Path, cfg, device, dtype):
    from synthface.generation.generator import Arc2FaceGenerator

    return Arc2FaceGenerator.from_folder(models_dir, cfg, device=device, dtype=dtype)


# --------------------------------------------------------------------------- the benchmark


class GenerationBenchmark:
    def __init__(self, opts: BenchOptions, log: Callable[[str], None] = print):
        self.opts = opts
        self.log = log
        self.device = resolve_device(opts.device)
        on_cuda = self.device.type == "cuda"
        self.dtype_name = str(resolve_dtype(opts.dtype, self.device)).replace("torch.", "")
        self.size = opts.size or default_size(opts.arch)
        self.batch_sizes = tuple(opts.batch_sizes or ((4, 8, 16, 32) if on_cuda else (4, 8)))
        unknown = set(opts.parts) - set(PARTS)
        if unknown:
            raise ConfigError(f"bench generate: unknown part(s) {sorted(unknown)}; choose from {list(PARTS)}")
        self.rows: list[Row] = []
        self.flops: dict[str, Any] = {}
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._tmp: tempfile.TemporaryDirectory | None = None

    # ---- settings shared by A and B
    def base_data(self, **extra) -> dict[str, Any]:
        data = {
            "scheduler": "dpmsolver++",
            "steps": self.opts.steps,
            "guidance": self.opts.guidance,
            "height": self.size,
            "width": self.size,
            "dtype": self.dtype_name,
            "device": str(self.device),
        }
        data.update(extra)
        return data

    def torch_dtype(self, name: str | None = None):
        import torch

        return getattr(torch, name or self.dtype_name)

    # ---- the model folder
    def prepare_models(self) -> Path:
        if self.opts.models_dir:
            path = Path(self.opts.models_dir)
            if not path.is_dir():
                raise ConfigError(f"bench generate: --models {path} is not a folder")
            return path
        if self.opts.work_dir:
            root = Path(self.opts.work_dir) / f"bench-models-{self.opts.arch}"
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="synthface-bench-")
            root = Path(self._tmp.name) / f"bench-models-{self.opts.arch}"
        if (root / "synthface-models.json").is_file():
            self.log(f"reusing random-weight model folder {root}")
            return root
        start = time.perf_counter()
        self.log(f"writing a random-weight '{self.opts.arch}' model folder to {root} ...")
        write_random_model_folder(
            root, self.opts.arch, device=str(self.device), dtype=self.torch_dtype(), seed=self.opts.seed,
            with_controls="controls" in self.opts.parts,
        )
        self.log(f"  written in {time.perf_counter() - start:.1f} s")
        return root

    # ---- one row of B
    def time_generator(self, models_dir: Path, group: str, name: str, batch_size: int, changes: dict | None = None, note="") -> Row:
        """Time B with the shared settings, the user's overrides, then this row's ``changes``."""
        cfg = generation_config(self.base_data(batch_size=batch_size), self.opts.overrides, changes)
        lcm = cfg.lcm == "on"
        steps = cfg.lcm_steps if lcm else cfg.steps
        if cfg.reference.enabled:  # img2img runs only the last int(steps x strength) steps
            steps = min(int(steps * cfg.reference.strength), steps)
        guidance = cfg.lcm_guidance if lcm else cfg.guidance
        passes = unet_passes(steps, guidance, 1.0 if lcm else cfg.guidance_fraction)
        row = Row(group, name, batch_size, cfg.dtype, steps, guidance, passes, note=note)
        self.log(f"[{group}] {name}: batch {batch_size} ...")
        generator = None
        try:
            _free(self.device)
            start = time.perf_counter()
            generator = load_generator(models_dir, cfg, self.device, self.torch_dtype(cfg.dtype))
            _sync(self.device)
            row.load_s = time.perf_counter() - start
            row.perf = dict(generator.perf.as_dict())
            vectors = identity_vectors(batch_size, self.opts.seed + 1)
            n_calls = max(1, math.ceil(self.opts.images / batch_size))
            inputs = control_inputs(cfg, batch_size, self.opts.seed)  # {} unless a control row
            if cfg.reference.enabled:  # identity images to start from (random pixels: the cost is the same)
                import numpy as np

                pixels = np.random.default_rng(self.opts.seed + 3).integers(0, 256, (batch_size, cfg.height, cfg.width, 3))
                inputs["reference_images"] = list(pixels.astype(np.uint8))

            def call(i: int) -> None:
                seeds = [self.opts.seed * 1_000_003 + (i + 1) * batch_size + j for j in range(batch_size)]
                images = generator.generate(vectors, seeds, **inputs)
                assert images.shape[0] == batch_size

            self._fill(row, time_calls(call, n_calls, batch_size, self.device))
        except Exception as exc:  # one failing variant must not lose the other rows
            if isinstance(exc, ConfigError):
                raise
            row.error = f"{type(exc).__name__}: {exc}"[:500]
            self.log(f"  FAILED: {row.error}")
        finally:
            generator = None  # drop the models before the next row loads its own
            _free(self.device)
        return self._add(row)

    # ---- A: the reference pipeline
    def time_reference(self, models_dir: Path) -> Row:
        cfg = generation_config(self.base_data(batch_size=REFERENCE_IMAGES_PER_PROMPT, perf=PLAIN_PERF))
        passes = unet_passes(cfg.steps, cfg.guidance)
        row = Row("reference", "A: StableDiffusionPipeline", REFERENCE_IMAGES_PER_PROMPT, cfg.dtype, cfg.steps, cfg.guidance, passes)
        row.note = "Arc2Face README way: one identity per call, num_images_per_prompt=4, DPM-Solver++ multistep"
        self.log("[reference] A: StableDiffusionPipeline ...")
        try:
            self._time_reference(models_dir, cfg, row)
        except Exception as exc:  # B's rows are still worth having; B/A then stays empty
            if isinstance(exc, ConfigError):
                raise
            row.error = f"{type(exc).__name__}: {exc}"[:500]
            self.log(f"  FAILED: {row.error}")
        finally:
            _free(self.device)
        return self._add(row)

    def _time_reference(self, models_dir: Path, cfg, row: Row) -> None:
        import torch
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

        start = time.perf_counter()
        plain = load_generator(models_dir, cfg, self.device, self.torch_dtype())
        parts = reference_parts(plain)
        pipe = StableDiffusionPipeline(
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=parts["tokenizer"],
            unet=parts["unet"],
            scheduler=DPMSolverMultistepScheduler.from_config(parts["scheduler_config"]),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        _sync(self.device)
        row.load_s = time.perf_counter() - start
        self.flops = self._count_flops(parts, cfg)
        vectors = identity_vectors(max(1, math.ceil(self.opts.images / REFERENCE_IMAGES_PER_PROMPT)) + 1, self.opts.seed + 2)

        def call(i: int) -> None:
            embeds = parts["prompt_embeds"](vectors[i + 1 : i + 2])
            out = pipe(
                prompt_embeds=embeds,
                num_inference_steps=cfg.steps,
                guidance_scale=cfg.guidance,
                num_images_per_prompt=REFERENCE_IMAGES_PER_PROMPT,
                height=cfg.height,
                width=cfg.width,
                generator=torch.Generator(device=self.device).manual_seed(self.opts.seed + i + 1),
            )
            assert len(out.images) == REFERENCE_IMAGES_PER_PROMPT

        n_calls = max(1, math.ceil(self.opts.images / REFERENCE_IMAGES_PER_PROMPT))
        self._fill(row, time_calls(call, n_calls, REFERENCE_IMAGES_PER_PROMPT, self.device))

    def _count_flops(self, parts: dict, cfg) -> dict[str, Any]:
        counted = count_flops(
            parts["unet"], parts["vae"], cfg.height, cfg.width, parts["unet"].config.cross_attention_dim, self.device, self.torch_dtype()
        )
        info: dict[str, Any] = dict(counted)
        info["basis"] = "nominal" if self.opts.arch == "full" else "counted"
        info["nominal_unet_pass_tflop"] = NOMINAL_UNET_TFLOP_512 * cfg.height * cfg.width / 512**2
        info["nominal_vae_decode_tflop"] = NOMINAL_VAE_TFLOP_512 * cfg.height * cfg.width / 512**2
        return info

    def tflop_per_image(self, passes: float) -> float:
        if not self.flops:
            return nominal_tflop(passes, self.size, self.size)
        if self.flops["basis"] == "nominal":
            return nominal_tflop(passes, self.size, self.size)
        return self.flops["unet_pass_tflop"] * passes + self.flops["vae_decode_tflop"]

    def _fill(self, row: Row, timing: dict[str, float]) -> None:
        for key, value in timing.items():
            setattr(row, key, value)

    def _add(self, row: Row) -> Row:
        self.rows.append(row)
        self._write_json()  # after every row: a run cut short keeps what it measured
        return row

    # ---- the run
    def run(self) -> dict[str, Any]:
        opts = self.opts
        _quiet_loaders()
        models_dir = self.prepare_models()
        self.models_dir = models_dir
        base = self.base_data()
        if "reference" in opts.parts:
            self.time_reference(models_dir)
        if not self.flops:
            self.flops = self._flops_without_reference(models_dir)

        best_bs = self.batch_sizes[0]
        if "sweep" in opts.parts:
            sweep = [self.time_generator(models_dir, "generator", f"B: generator b{bs}", bs) for bs in self.batch_sizes]
            ok = [r for r in sweep if r.error is None]
            if ok:
                best_bs = max(ok, key=lambda r: r.images_per_s).batch_size
        self.best_batch_size = best_bs

        if "cache" in opts.parts:
            # The same row again in a fresh dynamo state: its warm-up is what a restarted
            # worker pays for compiling once the on-disk caches are filled.
            from synthface.generation.speed import resolve

            if resolve(generation_config(base, opts.overrides).perf, self.device).compile:
                self.time_generator(models_dir, "compile-cache", f"B: generator b{best_bs}, compile cache warm", best_bs)
            else:
                self.log("[compile-cache] skipped: torch.compile is off here")

        if "dtype" in opts.parts:
            if self.device.type == "cuda":
                other = "bfloat16" if self.dtype_name == "float16" else "float16"
                self.time_generator(models_dir, "dtype", f"dtype {other}", best_bs, {"dtype": other})
            else:
                self.log("[dtype] skipped: fp16/bf16 rows need CUDA")

        if "switches" in opts.parts:
            for name, changes, note in self.switch_variants(base):
                self.time_generator(models_dir, "switch", name, best_bs, changes, note=note)

        if "output" in opts.parts:
            for name, changes, note in self.output_variants(models_dir):
                self.time_generator(models_dir, "output-changing", name, best_bs, changes, note=note)

        if "controls" in opts.parts:
            self.time_controls(models_dir, best_bs)

        result = self.result()
        self._write_json()
        return result

    def time_controls(self, models_dir: Path, batch_size: int) -> None:
        """Arc2Face's controls against plain generation, timed in the same run at one batch size."""
        have_pose = (models_dir / "controlnet" / "config.json").is_file()
        have_exp = (models_dir / "exp_adapter" / "exp_adapter.bin").is_file()
        pose = {"pose": {"mode": "pool", "pool": "(bench: normal maps rendered in memory)"}}
        expression = {"expression": {"mode": "gaussian"}}
        variants = []
        if have_exp:
            variants.append(("control: expression adapter", expression, "IP-Adapter, 55-d FLAME vector"))
        if have_pose:
            variants.append(("control: pose ControlNet", pose, "ControlNet on normal maps"))
        if have_exp and have_pose:
            variants.append(("control: expression + pose", {**expression, **pose}, "both"))
        if not variants:
            self.log("[controls] skipped: no controlnet/ or exp_adapter/ in the model folder (a reused --work-dir "
                     "folder written without --parts controls has none)")
            return
        plain = self.time_generator(models_dir, "output-changing", "control: none (baseline)", batch_size, note="plain, same run")
        for name, changes, note in variants:
            row = self.time_generator(models_dir, "output-changing", name, batch_size, changes, note=note)
            if row.error is None and plain.error is None and plain.ms_per_image:
                row.note += f"; {row.ms_per_image / plain.ms_per_image:.2f}x plain ms/image"

    def _flops_without_reference(self, models_dir: Path) -> dict[str, Any]:
        cfg = generation_config(self.base_data(batch_size=1, perf=PLAIN_PERF))
        plain = load_generator(models_dir, cfg, self.device, self.torch_dtype())
        try:
            return self._count_flops(reference_parts(plain), cfg)
        finally:
            del plain
            _free(self.device)

    def switch_variants(self, base: dict) -> list[tuple[str, dict, str]]:
        """One row per perf switch, flipped against its resolved default on this device."""
        from synthface.generation.speed import resolve

        default = resolve(generation_config(base, self.opts.overrides).perf, self.device)
        wanted = self.opts.switches or SWITCHES
        unknown = set(wanted) - set(SWITCHES)
        if unknown:
            raise ConfigError(f"bench generate: unknown switch(es) {sorted(unknown)}; choose from {list(SWITCHES)}")
        on_cuda = self.device.type == "cuda"
        rows: list[tuple[str, dict, str]] = []

        def flip(key: str, note: str = "") -> None:
            value = getattr(default, key)
            rows.append((f"{key}={'off' if value else 'on'}", {"perf": {key: not value}}, note))

        asked = set(self.opts.switches or ())
        for key in wanted:
            if key in ("compile", "fuse_qkv", "channels_last", "vae_slicing"):
                flip(key)
            elif key == "attention":
                other = "classic" if default.attention == "sdpa" else "sdpa"
                rows.append((f"attention={other}", {"perf": {"attention": other}}, "explicit softmax(QK^T)V vs torch SDPA"))
            elif key == "compile_vae" and (default.compile or key in asked):
                flip(key, "VAE decoder compiled too")
            elif key == "inductor_tuning" and (default.compile or key in asked):
                flip(key, "diffusers' inductor flags (only with compile)")
            elif key == "compile_mode" and default.compile:
                for mode in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
                    if mode != default.compile_mode:
                        rows.append((f"compile_mode={mode}", {"perf": {"compile_mode": mode}}, ""))
            elif key == "cudnn_tf32" and on_cuda:
                rows.append(("cudnn_benchmark=off,tf32=off", {"perf": {"cudnn_benchmark": False, "tf32": False}}, ""))
        return rows

    def output_variants(self, models_dir: Path) -> list[tuple[str, dict, str]]:
        opts = self.opts
        rows: list[tuple[str, dict, str]] = []
        for key in opts.outputs:
            if key == "steps" and opts.fewer_steps < opts.steps:
                rows.append((f"steps={opts.fewer_steps}", {"steps": opts.fewer_steps}, "fewer solver steps"))
            elif key == "guidance_fraction" and opts.guidance > 1.0:
                rows.append(
                    (f"guidance_fraction={opts.truncate_fraction}", {"guidance_fraction": opts.truncate_fraction}, "guidance truncation")
                )
            elif key == "no_guidance" and opts.guidance > 1.0:
                rows.append(("guidance=1.0", {"guidance": 1.0}, "no classifier-free guidance (one UNet pass per step)"))
            elif key == "lcm":
                if (models_dir / "lcm-lora").is_dir():
                    rows.append(("lcm (LCM-LoRA)", {"lcm": "on", "scheduler": "lcm"}, "LCM-LoRA few-step mode"))
                else:
                    self.log("[output] lcm skipped: no lcm-lora/ in the model folder")
            elif key == "reference":
                strength = REFERENCE_ROW_STRENGTH
                rows.append(
                    (
                        f"reference (img2img, strength {strength})",
                        {"reference": {"enabled": True, "strength": strength}},
                        "generation.reference: VAE-encode an identity image, run the last int(steps x strength) steps",
                    )
                )
        return rows

    # ---- report
    def reference_row(self) -> Row | None:
        return next((r for r in self.rows if r.group == "reference" and r.error is None), None)

    def result(self) -> dict[str, Any]:
        ref = self.reference_row()
        for row in self.rows:
            if row.error is None and row.images_per_s > 0:
                row.tflop_per_image = self.tflop_per_image(row.unet_passes_per_image)
                row.tflops_per_s = row.tflop_per_image * row.images_per_s
                if ref is not None and row is not ref:
                    row.vs_reference = row.images_per_s / ref.images_per_s
        sweep = [r for r in self.rows if r.group == "generator" and r.error is None]
        best = max(sweep, key=lambda r: r.images_per_s) if sweep else None
        same_batch = next((r for r in sweep if r.batch_size == REFERENCE_IMAGES_PER_PROMPT), None)
        summary = {
            "reference_images_per_s": ref.images_per_s if ref else None,
            "best_batch_size": best.batch_size if best else None,
            "best_images_per_s": best.images_per_s if best else None,
            "b_over_a": (best.images_per_s / ref.images_per_s) if best and ref else None,
            "b_over_a_same_batch": (same_batch.images_per_s / ref.images_per_s) if same_batch and ref else None,
            "best_tflops_per_s": best.tflops_per_s if best else None,
            "first_images_s": (best.load_s + best.warmup_s) if best else None,
        }
        # reference mode against plain generation at the same batch size, same run
        reference_mode = next((r for r in self.rows if r.name.startswith("reference (") and r.error is None), None)
        plain = next((r for r in sweep if reference_mode and r.batch_size == reference_mode.batch_size), None)
        summary["reference_mode_cost_vs_plain"] = (
            reference_mode.ms_per_image / plain.ms_per_image if reference_mode and plain and plain.ms_per_image else None
        )
        return {
            "benchmark": "synthface bench generate",
            "started": self.started,
            "machine": machine_info(self.device),
            "settings": {
                "arch": self.opts.arch,
                "device": str(self.device),
                "dtype": self.dtype_name,
                "size": self.size,
                "steps": self.opts.steps,
                "guidance": self.opts.guidance,
                "scheduler": "dpmsolver++",
                "batch_sizes": list(self.batch_sizes),
                "timed_images_per_row": self.opts.images,
                "models_dir": str(getattr(self, "models_dir", "")),
                "weights": "given folder" if self.opts.models_dir else "random",
                "overrides": list(self.opts.overrides),
            },
            "flops": self.flops,
            "summary": summary,
            "rows": [asdict(r) for r in self.rows],
        }

    def _write_json(self) -> None:
        write_result(self.opts.json_path, self.result())

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# Every switch off: the modules of the plain generator are what the reference pipeline runs.
# (cuDNN autotuning and TF32 off too: torch's defaults, as the README's script runs.)
PLAIN_PERF = {
    "channels_last": False,
    "fuse_qkv": False,
    "compile": False,
    "compile_vae": False,
    "attention": "sdpa",
    "cudnn_benchmark": False,
    "tf32": False,
}


def reference_parts(generator) -> dict[str, Any]:
    """The loaded modules of a (plain) generator, for building the reference pipeline.

    The pipeline gets the very modules the production loader produced, and the
    identity conditioning is the generator's own (Arc2Face's prompt with the ID
    vector in the ``id`` token slot).
    """
    import torch

    def prompt_embeds(vectors):
        return generator.conditioner.encode(torch.from_numpy(vectors)).to(generator.dtype)

    return {
        "unet": generator.unet,
        "vae": generator.vae,
        "text_encoder": generator.text_encoder,
        "tokenizer": generator.parts.tokenizer,
        "scheduler_config": generator.parts.scheduler_config,
        "prompt_embeds": prompt_embeds,
    }


def _quiet_loaders() -> None:
    """No per-load progress bars: the benchmark loads the models once per row."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def machine_info(device) -> dict[str, Any]:
    import diffusers
    import torch

    info: dict[str, Any] = {
        "host_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": str(device),
    }
    load = load_average()
    if load == load:  # NaN where the OS has no load average
        info["load_avg_1min"] = load
    if getattr(device, "type", device) == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_mem_gib"] = props.total_memory / 2**30
        info["cuda"] = torch.version.cuda
    return info


def default_json_path(arch: str, device: str) -> Path:
    """Where a run's result goes unless --json says: runs/bench/generate-<arch>-<device>-<UTC time>.json."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("runs") / "bench" / f"generate-{arch}-{device.replace(':', '')}-{stamp}.json"


def run_generation_bench(opts: BenchOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One whole `bench generate` run: every asked-for part, the JSON rewritten after each row;
    the random model folder removed at the end unless it lives in ``opts.work_dir``."""
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    bench = GenerationBenchmark(opts, log=log)
    try:
        return bench.run()
    finally:
        bench.close()
