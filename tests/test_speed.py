"""generation.perf: switches resolve by device and keep the output (fp32, CPU)."""

from __future__ import annotations

import copy

import pytest
import torch

from synthface.config import load_config
from synthface.errors import ConfigError
from synthface.generation.config import PerfConfig
from synthface.generation.speed import optimize_modules, resolve


def tiny_unet() -> "torch.nn.Module":
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    ).eval()


def tiny_vae() -> "torch.nn.Module":
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=16,
    ).eval()


@pytest.fixture(scope="module")
def models():
    return tiny_unet(), tiny_vae()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(3)
    return (
        torch.randn(2, 4, 8, 8, generator=g),
        torch.tensor([999, 10]),
        torch.randn(2, 7, 32, generator=g),
        torch.randn(2, 4, 8, 8, generator=g),
    )


def run(unet, vae, inputs):
    x, t, enc, z = inputs
    with torch.no_grad():
        return unet(x, t, enc).sample, vae.decode(z).sample


def test_auto_is_on_for_cuda_and_off_for_cpu():
    cfg = PerfConfig()
    cpu, gpu = resolve(cfg, "cpu"), resolve(cfg, torch.device("cuda", 0))
    for name in ("channels_last", "fuse_qkv", "compile", "cudnn_benchmark", "tf32"):
        assert getattr(cpu, name) is False, name
        assert getattr(gpu, name) is True, name
    assert gpu.cuda_graphs is True  # default mode max-autotune captures CUDA graphs
    assert cpu.cuda_graphs is False and cpu.compile_cache_dir is None
    assert cpu.attention == gpu.attention == "sdpa"
    assert gpu.vae_slicing is False and gpu.vae_tiling is False


def test_explicit_values_override_auto_and_cuda_graphs_follow_mode():
    assert resolve(PerfConfig(compile=False), "cuda").cuda_graphs is False
    assert resolve(PerfConfig(compile_mode="max-autotune-no-cudagraphs"), "cuda").cuda_graphs is False
    assert resolve(PerfConfig(compile_mode="reduce-overhead"), "cuda").cuda_graphs is True
    assert resolve(PerfConfig(channels_last=True, compile=True), "cpu").channels_last is True
    # TF32 and cuDNN autotuning mean nothing off CUDA, even when asked for.
    assert resolve(PerfConfig(tf32=True, cudnn_benchmark=True), "cpu").tf32 is False


def test_bad_perf_config_names_the_key():
    with pytest.raises(ConfigError, match="compile_mode"):
        load_config(PerfConfig, overrides=["compile_mode=turbo"])
    with pytest.raises(ConfigError, match="fuse_qkv"):
        load_config(PerfConfig, overrides=["fuse_qkv=maybe"])
    with pytest.raises(ConfigError, match="flash"):
        load_config(PerfConfig, overrides=["flash=true"])


def test_cpu_defaults_leave_modules_plain(models, inputs):
    unet, vae = (copy.deepcopy(m) for m in models)
    perf = optimize_modules(unet, vae, None, PerfConfig(), "cpu")
    assert not perf.compile and not perf.channels_last
    assert not hasattr(unet.forward, "_synthface_compiled")
    for a, b in zip(run(unet, vae, inputs), run(*models, inputs)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    "switches",
    [
        {"channels_last": True},
        {"fuse_qkv": True},
        {"attention": "classic"},
        {"channels_last": True, "fuse_qkv": True},
    ],
    ids=lambda s: "+".join(f"{k}={v}" for k, v in s.items()),
)
def test_switches_keep_outputs_within_fp32_tolerance(models, inputs, switches):
    unet, vae = (copy.deepcopy(m) for m in models)
    perf = optimize_modules(unet, vae, None, PerfConfig(**switches), "cpu")
    ref_sample, ref_image = run(*models, inputs)
    sample, image = run(unet, vae, inputs)
    torch.testing.assert_close(sample, ref_sample, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(image, ref_image, rtol=1e-4, atol=1e-4)
    assert sample.abs().max() > 0.1  # the comparison is not between two zero tensors
    if switches.get("fuse_qkv"):
        names = {type(p).__name__ for p in unet.attn_processors.values()}
        assert names == {"FusedAttnProcessor2_0"}
        assert any(hasattr(m, "to_qkv") for m in unet.modules())
    if switches.get("channels_last"):
        conv = unet.conv_in.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    if switches.get("attention") == "classic":
        assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor"}
    assert perf.vae_slicing is False and vae.use_slicing is False


def test_compile_wraps_forward_in_place_and_keeps_outputs(models, inputs, tmp_path, monkeypatch):
    # The 'eager' backend runs dynamo's full-graph capture without a C++ build, so
    # this checks the wrapping (and that the UNet traces with no graph break) fast.
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # restored after the test
    unet, vae = (copy.deepcopy(m) for m in models)
    cfg = PerfConfig(compile=True, compile_vae=True, compile_backend="eager", compile_cache_dir=str(tmp_path / "cache"))
    perf = optimize_modules(unet, vae, None, cfg, "cpu")
    assert perf.compile and perf.compile_vae and not perf.cuda_graphs
    assert unet.forward._synthface_compiled and vae.decoder.forward._synthface_compiled
    assert unet.config.cross_attention_dim == 32  # still the diffusers model, config and all
    assert (tmp_path / "cache").is_dir()
    for a, b in zip(run(unet, vae, inputs), run(*models, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compiled_unet_pads_a_short_batch_instead_of_compiling_again(models, monkeypatch):
    from torch._dynamo.testing import CompileCounter

    import synthface.generation.speed as speed

    counter = CompileCounter()  # a dynamo backend that counts the graphs it is given
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": counter, "mode": None}))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    torch._dynamo.reset()
    unet = copy.deepcopy(models[0])
    speed.optimize_modules(unet, None, None, PerfConfig(compile=True, compile_cache_dir=None), "cpu")
    g = torch.Generator().manual_seed(5)
    x, enc = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 7, 32, generator=g)
    t = torch.tensor(500)
    with torch.no_grad():
        full = unet(x, t, enc).sample  # batch 4: compiles
        short = unet(x[:3], t, encoder_hidden_states=enc[:3]).sample  # batch 3: padded to 4
        assert counter.frame_count == 1  # one graph for both batch sizes
        half = unet(x[:2], t, enc[:2]).sample  # batch 2 (e.g. CFG off): its own graph, not padded to 4
        assert counter.frame_count == 2
        ref = models[0](x[:3], t, enc[:3]).sample
    torch.testing.assert_close(half, ref[:2], rtol=1e-4, atol=1e-4)
    assert short.shape == ref.shape
    torch.testing.assert_close(short, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(full[:3], ref, rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()
