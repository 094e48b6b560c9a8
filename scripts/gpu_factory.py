#!/usr/bin/env python3
"""Issue 17 part 2, prepared: the whole factory against the generator alone, on one GPU machine.

Run from the repo root, on the GPU machine through scripts/gpu_factory.sh (it
installs the carried wheels first), or here on the CPU with --tiny to check
that every step runs:

    bash scripts/gpu_factory.sh                         # GPU: full-size random models
    python scripts/gpu_factory.py --tiny --out /tmp/gf  # CPU dry run: tiny models, minutes

Steps (``--steps``, in this order; each rewrites ``factory-gpu.json`` under
``--out``, default $OUT, so a run cut short keeps what it measured):

1. ``env``: torch/CUDA/GPU, the versions of what the factory imports, whether
   Ray is importable, onnxruntime's providers and whether a session really
   runs on the CUDA provider.
2. ``models``: a random-weight model folder in the production layout:
   the full-size Arc2Face architecture (SD 1.5 UNet, CLIP ViT-L/14 text tower,
   SD VAE: bench/random_models.py), the biased tiny SCRFD-signature
   detector (synthface/faces/tiny.py: it reports one centred face on ANY image)
   and a full-size random IResNet-100 recognizer exported to ONNX (about the
   compute of Arc2Face's arcface.onnx, 512-d). Random weights make no faces: a
   real detector would find none and the filter would reject every image, so
   the biased detector stands in for it and the filter is set to pass
   everything; the images, crops and scores mean nothing, only the time does.
3. ``bank``: a uniform identity bank.
4. ``generator``: the generator-only benchmark (`synthface bench generate
   --parts sweep`) on the same folder, batch size, steps, guidance and size.
5. ``factory``: `synthface generate` on the same folder (or, where Ray is not
   importable, the same shard jobs through the worker's own code in this
   process, and the JSON says so), once per ``--overlap`` value, while a
   sampler thread records GPU utilisation and memory (NVML, else nvidia-smi)
   and host memory (the run's process tree); also time to the first
   committed shard and the steady images/s between the first and last commit.

The summary compares factory images/s with generator-only images/s (issue
17's target: the factory loses at most 5% to everything that is not generation).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JSON_NAME = "factory-gpu.json"
STEPS = ("env", "models", "bank", "generator", "factory")
FACTORY_MODULES = (
    "torch", "diffusers", "transformers", "pydantic", "ray", "onnx", "onnxruntime", "pyarrow", "cv2",
    "skimage", "PIL", "fsspec", "yaml", "psutil", "pynvml", "typer", "rich",
)


# ---------------------------------------------------------------- the report


class Report:
    """The JSON under --out, rewritten (temp file + rename) after every step."""

    def __init__(self, out: Path, args: argparse.Namespace):
        self.path = out / JSON_NAME
        self.data: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "args": vars(args), "steps": {}}
        out.mkdir(parents=True, exist_ok=True)

    def put(self, step: str, value) -> None:
        self.data["steps"][step] = value
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.path)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- sampling


class Sampler(threading.Thread):
    """Samples GPU utilisation / memory and the host memory of a process tree every ``every_s``."""

    def __init__(self, pid: int, every_s: float = 0.5):
        super().__init__(name="gpu-factory-sampler", daemon=True)
        self.pid, self.every_s = pid, every_s
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, float | None, float | None, float]] = []  # t, gpu %, gpu MiB, host MiB
        self.gpu_source = "none"
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(0))
            self.gpu_source = "nvml"
        except Exception:  # noqa: BLE001 - no NVML: try nvidia-smi, else no GPU figures
            if shutil.which("nvidia-smi"):
                self.gpu_source = "nvidia-smi"

    def _gpu(self) -> tuple[float | None, float | None]:
        if self._nvml:
            nv, handle = self._nvml
            return float(nv.nvmlDeviceGetUtilizationRates(handle).gpu), nv.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        if self.gpu_source == "nvidia-smi":
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True, text=True, timeout=5,
            ).stdout.strip().split(",")
            return float(out[0]), float(out[1])
        return None, None

    def _host_mib(self) -> float:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.stop_event.is_set():
            try:
                gpu, gpu_mib = self._gpu()
            except Exception:  # noqa: BLE001 - a missed sample is not a failed run
                gpu, gpu_mib = None, None
            self.samples.append((round(time.perf_counter() - t0, 2), gpu, gpu_mib, round(self._host_mib(), 1)))
            self.stop_event.wait(self.every_s)

    def summary(self) -> dict:
        self.stop_event.set()
        self.join(timeout=10)
        gpu = [s[1] for s in self.samples if s[1] is not None]
        busy = [s[1] for s in self.samples[len(self.samples) // 10 :] if s[1] is not None]  # past the start-up
        return {
            "gpu_source": self.gpu_source,
            "samples": len(self.samples),
            "gpu_util_mean_pct": sum(gpu) / len(gpu) if gpu else None,
            "gpu_util_mean_pct_after_first_10pct": sum(busy) / len(busy) if busy else None,
            "gpu_mem_peak_mib": max((s[2] for s in self.samples if s[2] is not None), default=None),
            "host_rss_peak_mib": max((s[3] for s in self.samples), default=None),
            # every 4th sample: enough for a plot, small enough for the JSON
            "trace_t_gpu_gpumib_hostmib": self.samples[::4],
        }


# ---------------------------------------------------------------- steps


def step_env(args) -> dict:
    import importlib

    info: dict = {"python": sys.version.split()[0], "host": platform.node(), "cpus": os.cpu_count(), "modules": {}}
    for name in FACTORY_MODULES:
        try:
            mod = importlib.import_module(name)
            info["modules"][name] = getattr(mod, "__version__", "present")
        except Exception as exc:  # noqa: BLE001 - a missing module is a finding, not a crash
            info["modules"][name] = f"MISSING: {type(exc).__name__}: {exc}"
    import torch

    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if shutil.which("nvidia-smi"):
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv"],
            capture_output=True, text=True,
        ).stdout
    info["onnxruntime"] = onnxruntime_providers()
    return info


def onnxruntime_providers() -> dict:
    """Which providers onnxruntime offers, and which one a session on the tiny detector really uses."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"error": str(exc)}
    import tempfile

    from synthface.faces.tiny import write_tiny_face_models

    out: dict = {"available": ort.get_available_providers(), "device": ort.get_device()}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_face_models(tmp)["detector"]
        try:
            session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            out["session_providers"] = session.get_providers()
            out["cuda_provider_works"] = session.get_providers()[0] == "CUDAExecutionProvider"
        except Exception as exc:  # noqa: BLE001
            out["session_error"] = f"{type(exc).__name__}: {exc}"
            out["cuda_provider_works"] = False
    return out


def write_recognizer(path: Path, arch: str) -> dict:
    """A random IResNet (eval/backbones) exported to ONNX like arcface.onnx: input float[N,3,112,112]
    in (x-127.5)/127.5, output float[N,512]."""
    import warnings

    import torch

    from eval.backbones.iresnet import iresnet

    torch.manual_seed(0)
    model = iresnet(arch).eval()
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, torch.zeros(1, 3, 112, 112), str(tmp), input_names=["input.1"], output_names=["embedding"],
            dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    tmp.replace(path)
    return {"arch": arch, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "bytes": path.stat().st_size}


def step_models(args, models: Path) -> dict:
    from synthface.faces.tiny import DETECTOR_FILE, RECOGNIZER_FILE, write_tiny_face_models

    t0 = time.perf_counter()
    if args.tiny:
        from synthface.models.tiny import init_tiny

        init_tiny(models, with_face_models=True)
        info = {"arch": "tiny", "recognizer": "tiny"}
    else:
        import torch

        from bench.random_models import write_random_model_folder

        write_random_model_folder(
            models, arch="full", device=args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
            dtype=torch.float16, with_lcm_lora=False,
        )
        faces = write_tiny_face_models(models / "tiny-faces")
        shutil.move(str(faces["detector"]), models / DETECTOR_FILE)  # the biased detector: one face on any image
        info = {"arch": "full", "recognizer": write_recognizer(models / RECOGNIZER_FILE, args.recognizer)}
    info["seconds"] = round(time.perf_counter() - t0, 1)
    return info


def step_bank(args, work: Path) -> Path:
    from synthface.identity.bank import sample_bank, write_bank
    from synthface.identity.config import IdentityConfig

    bank, _ = sample_bank(IdentityConfig(num_identities=args.ids, sampler="uniform", device="cpu"), seed=0)
    return write_bank(bank, work / "bank.parquet")


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def step_generator(args, models: Path, out: Path, work: Path) -> dict:
    json_path = out / "generator-only.json"
    cmd = [
        sys.executable, "-m", "synthface", "bench", "generate", "--models", str(models), "--parts", "sweep",
        "--batch-sizes", str(args.batch_size), "--images", str(args.gen_images), "--steps", str(args.denoise_steps),
        "--guidance", str(args.guidance), "--size", str(args.size), "--device", args.device, "--json", str(json_path),
        "--set", f"generation.perf.compile_cache_dir={work / 'inductor'}",
    ]
    for item in args.perf:
        cmd += ["--set", f"generation.perf.{item}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=args.step_timeout)
    (out / "generator-only.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    result = {"cmd": " ".join(cmd), "rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    if json_path.exists():
        bench = json.loads(json_path.read_text(encoding="utf-8"))
        rows = [r for r in bench.get("rows", []) if r.get("batch_size") == args.batch_size and not r.get("error")]
        result["images_per_s"] = rows[0]["images_per_s"] if rows else None
        result["row"] = rows[0] if rows else None
    if proc.returncode:
        result["stderr_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return result


def factory_config(args, models: Path, bank: Path, overlap: bool) -> dict:
    gpu = args.device != "cpu"
    return {
        "seed": 0,
        "models_dir": str(models),
        "generation": {
            "steps": args.denoise_steps, "guidance": args.guidance, "height": args.size, "width": args.size,
            "batch_size": args.batch_size, "device": args.device,
            "perf": {"compile_cache_dir": str(Path(args.work) / "inductor"), **perf_overrides(args.perf)},
        },
        "faces": {"det_size": max(32, min(256, args.size // 32 * 32)), "device": args.faces_device, "threads": args.faces_threads},
        # Pass everything: random weights make no faces (see the module docstring).
        "filter": {"use_target": False, "det_score_min": 0.0, "max_second_face_ratio": 1.0, "tau_intra": -1.0, "min_images": 1},
        "run": {
            # oversample 1 (the filter passes everything): images_per_id candidates per identity, no surplus
            "bank": str(bank), "ids_per_shard": args.ids_per_shard, "images_per_id": args.images_per_id, "oversample": 1.0,
            "batch_size": args.batch_size, "inter_class": "off", "workers": 1, "gpus_per_worker": 1 if gpu else 0,
            "cpus_per_worker": float(os.cpu_count() or 1), "max_retries": 0, "overlap": overlap, "log_every_s": 10,
        },
    }


def perf_overrides(items: list[str]) -> dict:
    """``["compile=false"]`` -> ``{"compile": False}`` (YAML scalars, as --set reads them)."""
    import yaml

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def shard_summary(out_dir: Path, t_start: float) -> dict:
    """Images/s from the committed shards' own stats: all of the run, and steady (first to last commit)."""
    stats = sorted(
        (json.loads(Path(p).read_text(encoding="utf-8")) for p in glob.glob(str(out_dir / "shard-*.json"))),
        key=lambda s: s["finished_at"],
    )
    if not stats:
        return {"shards": 0}
    cands = [s["num_candidates"] for s in stats]
    timings: dict[str, float] = {}
    for s in stats:
        for k, v in s.get("timings_s", {}).items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
    span = stats[-1]["finished_at"] - stats[0]["finished_at"]
    return {
        "shards": len(stats),
        "candidates": sum(cands),
        "accepted": sum(s["num_samples"] for s in stats),
        "first_commit_s": round(stats[0]["finished_at"] - t_start, 2),
        "steady_images_per_s": (sum(cands[1:]) / span) if len(stats) > 1 and span > 0 else None,
        "timings_s_sum": timings,
    }


def run_inprocess(cfg_data: dict, out_dir: Path) -> dict:
    """The shard jobs through ShardWorker.run_job, the code a Ray actor runs, one after another."""
    from pipelines.planning import plan_jobs
    from pipelines.stages import build_stages, load_bank_embeddings
    from pipelines.worker import ShardWorker

    embeddings = load_bank_embeddings(cfg_data["run"]["bank"])
    worker = ShardWorker(cfg_data, str(out_dir), embeddings, build_stages)
    worker.ready()
    for job in plan_jobs(len(embeddings), cfg_data["run"]["ids_per_shard"]):
        worker.run_job(job)
    return {}


def step_factory(args, models: Path, bank: Path, out: Path, work: Path, overlap: bool, runner: str) -> dict:
    import yaml

    cfg = factory_config(args, models, bank, overlap)
    name = f"factory-overlap-{'on' if overlap else 'off'}"
    cfg_path = work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out_dir = work / name
    shutil.rmtree(out_dir, ignore_errors=True)
    result: dict = {"runner": runner, "overlap": overlap, "config": str(cfg_path)}
    t_start = time.time()
    t0 = time.perf_counter()
    if runner == "ray":
        cmd = [sys.executable, "-m", "synthface", "generate", "-c", str(cfg_path), "-o", str(out_dir)]
        result["cmd"] = " ".join(cmd)
        with open(out / f"{name}.log", "w", encoding="utf-8") as logf:
            proc = subprocess.Popen(cmd, cwd=REPO, env=python_env(), stdout=logf, stderr=subprocess.STDOUT)
            sampler = Sampler(proc.pid)
            sampler.start()
            try:
                result["rc"] = proc.wait(timeout=args.step_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                result["rc"] = "timeout"
        result["sampling"] = sampler.summary()
    else:
        sampler = Sampler(os.getpid())
        sampler.start()
        try:
            run_inprocess(cfg, out_dir)
            result["rc"] = 0
        except Exception as exc:  # noqa: BLE001 - recorded, the next step still runs
            result["rc"] = f"{type(exc).__name__}: {exc}"
            result["traceback"] = traceback.format_exc()[-3000:]
        finally:
            result["sampling"] = sampler.summary()
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    result.update(shard_summary(out_dir, t_start))
    if result.get("candidates"):
        result["images_per_s_whole_run"] = result["candidates"] / result["wall_s"]
    return result


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "runs/gpu-factory"), help="Where the JSON and logs go ($OUT).")
    p.add_argument("--work", default="/tmp/synthface-gpu-factory", help="Models, bank, shards (not returned).")
    p.add_argument("--steps", dest="step_names", default=",".join(STEPS), help=f"Which steps, comma list of {STEPS}.")
    p.add_argument("--tiny", action="store_true", help="Tiny models on the CPU: the dry run of every step.")
    p.add_argument("--device", default=None, help="Generation device (default cuda; cpu with --tiny).")
    p.add_argument("--faces-device", default="auto", help="faces.device: auto (CUDA provider if present), cpu, cuda.")
    p.add_argument("--faces-threads", type=int, default=0, help="faces.threads (0 = onnxruntime's default).")
    p.add_argument("--recognizer", default="iresnet100", help="Random recognizer architecture (eval/backbones).")
    p.add_argument("--batch-size", type=int, default=None, help="run.batch_size = generation.batch_size = bench batch.")
    p.add_argument("--denoise-steps", type=int, default=None, help="Denoising steps (default 25; 2 tiny).")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--size", type=int, default=None, help="Image side (default 512; 64 tiny).")
    p.add_argument("--ids", type=int, default=None, help="Identities in the run (default 16; 4 tiny).")
    p.add_argument("--ids-per-shard", type=int, default=None, help="Default 2.")
    p.add_argument("--images-per-id", type=int, default=None, help="Default 16 (GPU), 2 (tiny).")
    p.add_argument("--gen-images", type=int, default=None, help="Timed images of the generator-only row.")
    p.add_argument("--perf", action="append", default=[], metavar="KEY=VALUE",
                   help="generation.perf override for both the benchmark and the factory, e.g. compile=false.")
    p.add_argument("--overlap", default="off,on", help="Factory runs, e.g. 'off,on' or 'on'.")
    p.add_argument("--runner", choices=("auto", "ray", "inprocess"), default="auto",
                   help="ray = `synthface generate`; inprocess = the worker's code in this process; auto = ray if importable.")
    p.add_argument("--step-timeout", type=float, default=540.0, help="Seconds for one subprocess step.")
    args = p.parse_args(argv)
    tiny = args.tiny
    args.device = args.device or ("cpu" if tiny else "cuda")
    args.batch_size = args.batch_size or (2 if tiny else 16)
    args.denoise_steps = args.denoise_steps or (2 if tiny else 25)
    args.size = args.size or (64 if tiny else 512)
    args.ids = args.ids or (4 if tiny else 16)
    args.ids_per_shard = args.ids_per_shard or 2
    args.images_per_id = args.images_per_id or (2 if tiny else 16)
    args.gen_images = args.gen_images or (4 if tiny else 64)
    if tiny:
        args.faces_device = "cpu"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = Report(out, args)
    wanted = [s.strip() for s in args.step_names.split(",") if s.strip()]
    unknown = set(wanted) - set(STEPS)
    if unknown:
        print(f"error: unknown step(s) {sorted(unknown)}; choose from {STEPS}", file=sys.stderr)
        return 2
    models, bank = work / "models", work / "bank.parquet"
    failed = False
    for step in STEPS:
        if step not in wanted:
            continue
        log(f"step {step}")
        t0 = time.perf_counter()
        try:
            if step == "env":
                value = step_env(args)
                report.data["ray_importable"] = not str(value["modules"].get("ray", "")).startswith("MISSING")
            elif step == "models":
                value = step_models(args, models)
            elif step == "bank":
                value = {"path": str(step_bank(args, work)), "ids": args.ids}
            elif step == "generator":
                value = step_generator(args, models, out, work)
            else:
                runner = args.runner
                if runner == "auto":
                    try:
                        import ray  # noqa: F401

                        runner = "ray"
                    except ImportError:
                        runner = "inprocess"
                value = {}
                for mode in [m.strip() for m in args.overlap.split(",") if m.strip()]:
                    value[f"overlap_{mode}"] = step_factory(args, models, bank, out, work, mode == "on", runner)
                    report.put(step, value)
        except Exception as exc:  # noqa: BLE001 - recorded; later steps may still say something
            value = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            failed = True
        if isinstance(value, dict):
            value["step_seconds"] = round(time.perf_counter() - t0, 1)
        report.put(step, value)
        log(f"step {step}: {json.dumps(value, default=str)[:400]}")
    report.data["summary"] = summarise(report.data["steps"])
    report.write()
    log(f"summary: {json.dumps(report.data['summary'], default=str)}")
    return 1 if failed else 0


def summarise(steps: dict) -> dict:
    gen = (steps.get("generator") or {}).get("images_per_s")
    out: dict = {"generator_only_images_per_s": gen}
    for key, run in (steps.get("factory") or {}).items():
        if not isinstance(run, dict):
            continue
        steady = run.get("steady_images_per_s")
        out[key] = {
            "runner": run.get("runner"),
            "steady_images_per_s": steady,
            "factory_over_generator": (steady / gen) if steady and gen else None,
            "first_commit_s": run.get("first_commit_s"),
            "gpu_util_mean_pct": (run.get("sampling") or {}).get("gpu_util_mean_pct_after_first_10pct"),
            "gpu_mem_peak_mib": (run.get("sampling") or {}).get("gpu_mem_peak_mib"),
            "host_rss_peak_mib": (run.get("sampling") or {}).get("host_rss_peak_mib"),
        }
    out["target"] = "factory_over_generator >= 0.95 (issue 17)"
    return out


if __name__ == "__main__":
    sys.exit(main())
