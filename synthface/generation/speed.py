"""GPU speed switches for the generator: the ``generation.perf`` config section.

The generator calls :func:`optimize_modules` once, after it has loaded its
models, moved them to the device and cast them to their dtype (and after any
LoRA has been fused: fused QKV projections copy the attention weights).

Every switch here keeps the output the same up to float rounding; switches
that change what is sampled (fewer steps, guidance truncation, LCM) belong to
the generation config proper. A switch set to ``"auto"`` is ON on CUDA and OFF
elsewhere, so the generator runs with the best known settings on a GPU and
plainly on a CPU (where tests want fp32 eager code). What each switch trades
is written up in docs/throughput.md; the numbers come from
``synthface bench generate``.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthface.generation.config import PerfConfig

log = logging.getLogger(__name__)

# Modes in which inductor captures CUDA graphs (on CUDA devices only).
CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})


@dataclass(frozen=True)
class ResolvedPerf:
    """:class:`PerfConfig` with every ``"auto"`` decided for one device."""

    device_type: str
    channels_last: bool
    fuse_qkv: bool
    attention: str
    compile: bool
    compile_vae: bool
    compile_mode: str
    compile_fullgraph: bool
    compile_backend: str
    compile_cache_dir: str | None
    cuda_graphs: bool
    inductor_tuning: bool
    cudnn_benchmark: bool
    tf32: bool
    vae_slicing: bool
    vae_tiling: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device_type(device: Any) -> str:
    if device is None:
        return "cpu"
    if isinstance(device, str):
        return device.split(":", 1)[0]
    return getattr(device, "type", str(device))


def resolve(cfg: PerfConfig, device: Any) -> ResolvedPerf:
    """Decide every ``"auto"`` switch for ``device``: ON on CUDA, OFF elsewhere."""
    dev = _device_type(device)
    on_cuda = dev == "cuda"

    def pick(value: bool | str) -> bool:
        return on_cuda if value == "auto" else bool(value)

    compile_unet = pick(cfg.compile)
    compile_vae = bool(cfg.compile_vae)
    any_compile = compile_unet or compile_vae
    return ResolvedPerf(
        device_type=dev,
        channels_last=pick(cfg.channels_last),
        fuse_qkv=pick(cfg.fuse_qkv),
        attention=cfg.attention,
        compile=compile_unet,
        compile_vae=compile_vae,
        compile_mode=cfg.compile_mode,
        compile_fullgraph=cfg.compile_fullgraph,
        compile_backend=cfg.compile_backend,
        compile_cache_dir=cfg.compile_cache_dir if any_compile else None,
        cuda_graphs=any_compile and on_cuda and cfg.compile_backend == "inductor" and cfg.compile_mode in CUDA_GRAPH_MODES,
        inductor_tuning=any_compile and cfg.compile_backend == "inductor" and cfg.inductor_tuning,
        cudnn_benchmark=on_cuda and pick(cfg.cudnn_benchmark),
        tf32=on_cuda and pick(cfg.tf32),
        vae_slicing=cfg.vae_slicing,
        vae_tiling=cfg.vae_tiling,
    )


def optimize_modules(unet, vae, text_encoder, cfg: PerfConfig, device) -> ResolvedPerf:
    """Apply the switches in ``cfg`` to the loaded modules, in place.

    Call once, after the modules are on ``device`` in their final dtype. Returns
    the resolved settings (for ``describe()`` and benchmark reports).
    Compilation is lazy: its cost is paid on the first call of each input shape
    (``dynamic=False``), which is why callers warm up once per batch size.
    """
    import torch

    perf = resolve(cfg, device)
    for module in (unet, vae, text_encoder):
        if module is not None:
            module.eval()
            module.requires_grad_(False)

    if perf.device_type == "cuda":
        # Process-wide flags: set both ways, so the last generator built decides.
        torch.backends.cuda.matmul.allow_tf32 = perf.tf32
        torch.backends.cudnn.allow_tf32 = perf.tf32
        torch.backends.cudnn.benchmark = perf.cudnn_benchmark

    # Attention kernels first: fusing QKV swaps the processor to its fused SDPA twin.
    if unet is not None:
        _set_attention(unet, perf.attention)
    if vae is not None:
        _set_attention(vae, perf.attention)
    if perf.fuse_qkv and perf.attention == "sdpa":
        for module in (unet, vae):
            if module is not None and hasattr(module, "fuse_qkv_projections"):
                module.fuse_qkv_projections()

    if perf.channels_last:
        for module in (unet, vae):
            if module is not None:
                module.to(memory_format=torch.channels_last)

    if vae is not None:
        # Batched decode in one pass: slicing/tiling trade speed for memory.
        vae.enable_slicing() if perf.vae_slicing else vae.disable_slicing()
        vae.enable_tiling() if perf.vae_tiling else vae.disable_tiling()

    if perf.compile or perf.compile_vae:
        _configure_compile_cache(perf)
        _allow_shape_recompiles()
        if perf.inductor_tuning:
            _set_inductor_tuning()
    if perf.compile and unet is not None:
        _compile_forward(unet, perf, pad_batch=True)
    if perf.compile_vae and vae is not None:
        _compile_forward(vae.decoder, perf)
    log.info("generation perf settings: %s", perf.as_dict())
    return perf


def _set_attention(model, attention: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if not hasattr(model, "set_attn_processor") or not getattr(model, "attn_processors", None):
        return
    model.set_attn_processor(AttnProcessor2_0() if attention == "sdpa" else AttnProcessor())


def _configure_compile_cache(perf: ResolvedPerf) -> None:
    """Point inductor's on-disk caches at one folder so a restart reuses compiled graphs."""
    import torch._inductor.config as inductor_config

    if perf.compile_cache_dir:
        path = Path(os.path.expanduser(perf.compile_cache_dir)).resolve()
        path.mkdir(parents=True, exist_ok=True)
        # Read by inductor whenever it looks up its cache dir; triton's cache sits below it.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    inductor_config.fx_graph_cache = True
    if hasattr(inductor_config, "autotune_local_cache"):
        inductor_config.autotune_local_cache = True


def _allow_shape_recompiles(limit: int = 32) -> None:
    """dynamic=False compiles once per input shape (batch size, CFG on/off, a short last
    batch); past dynamo's limit (8 by default) it would fall back to eager silently."""
    import torch._dynamo.config as dynamo_config

    if getattr(dynamo_config, "cache_size_limit", limit) < limit:
        dynamo_config.cache_size_limit = limit


def _set_inductor_tuning() -> None:
    import torch._inductor.config as inductor_config

    inductor_config.conv_1x1_as_mm = True
    inductor_config.coordinate_descent_tuning = True
    inductor_config.epilogue_fusion = False
    inductor_config.coordinate_descent_check_all_directions = True


def _compile_forward(module, perf: ResolvedPerf, pad_batch: bool = False) -> None:
    """Replace ``module.forward`` by a compiled version, keeping the module object.

    Keeping the object (rather than wrapping it) leaves ``.config``, ``.dtype``
    and friends in place for diffusers code that reads them. With CUDA graphs
    the outputs live in graph-owned memory that the next replay overwrites, so
    they are cloned (a few MB of latents, negligible) and each call opens a new
    graph step.

    ``pad_batch`` (the UNet): ``dynamic=False`` compiles once per batch size,
    and with autotuning each compile takes minutes. A call whose batch is a
    little smaller than one already compiled (less than 2x: a short last batch)
    is padded up to it by repeating its last row, and the output is cut back,
    so it reuses that graph. Much smaller batches (the conditional-only half
    under guidance truncation, tiny remainders) get their own graph rather than
    paying for twice their work. UNet rows do not interact, so the real rows'
    outputs are the same up to rounding.
    """
    import torch

    eager_forward = module.forward
    compiled = torch.compile(
        eager_forward,
        mode=None if perf.compile_backend != "inductor" else perf.compile_mode,
        fullgraph=perf.compile_fullgraph,
        dynamic=False,
        backend=perf.compile_backend,
    )
    compiled_batches: set[int] = set()

    def run(*args, **kwargs):
        if perf.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
            return _clone_tensors(compiled(*args, **kwargs))
        return compiled(*args, **kwargs)

    @functools.wraps(eager_forward)
    def forward(*args, **kwargs):
        return run(*args, **kwargs)

    @functools.wraps(eager_forward)
    def padded_forward(sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        n = sample.shape[0]
        target = min((b for b in compiled_batches if n < b < 2 * n), default=n)
        # row-wise extras (ControlNet residuals, adapter embeddings) are not padded: no padding then
        if target == n or args or any(torch.is_tensor(v) or (isinstance(v, (dict, list, tuple)) and v) for v in kwargs.values()):
            compiled_batches.add(n)
            return run(sample, timestep, encoder_hidden_states, *args, **kwargs)
        sample = _pad_rows(sample, target)
        if encoder_hidden_states is not None:
            encoder_hidden_states = _pad_rows(encoder_hidden_states, target)
        if torch.is_tensor(timestep) and timestep.ndim == 1 and timestep.shape[0] == n:
            timestep = _pad_rows(timestep, target)
        return _first_rows(run(sample, timestep, encoder_hidden_states, **kwargs), n)

    wrapper = padded_forward if pad_batch else forward
    wrapper._synthface_compiled = True  # type: ignore[attr-defined]
    module.forward = wrapper


def _pad_rows(tensor, rows: int):
    import torch

    extra = rows - tensor.shape[0]
    return torch.cat([tensor, tensor[-1:].expand(extra, *tensor.shape[1:])]) if extra > 0 else tensor


def _first_rows(value, n: int):
    import torch

    if torch.is_tensor(value):
        return value[:n]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_first_rows(v, n) for v in value)
    if hasattr(value, "keys") and hasattr(value, "__setitem__"):  # diffusers BaseOutput
        for key in list(value.keys()):
            value[key] = _first_rows(value[key], n)
        return value
    return value


def _clone_tensors(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_clone_tensors(v) for v in value)
    if isinstance(value, list):
        return [_clone_tensors(v) for v in value]
    if hasattr(value, "keys") and hasattr(value, "__setitem__"):  # diffusers BaseOutput (an OrderedDict)
        for key in list(value.keys()):
            value[key] = _clone_tensors(value[key])
        return value
    return value
