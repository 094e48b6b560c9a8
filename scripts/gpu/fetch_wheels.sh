#!/usr/bin/env bash
# Run HERE (the developer machine, repo root) before the GPU calls: downloads the
# wheels the GPU image lacks (it has torch, transformers, typer, rich, numpy, peft,
# safetensors, huggingface_hub, but no diffusers or pydantic) for its Python 3.12
# into .whl/, which git ignores and `run(carry=[".whl"])` takes along.
# The pins are the versions the project is tested with here.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .git/info
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  diffusers==0.42.0 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing-extensions==4.16.0 importlib-metadata==10.2.0
ls -la .whl
du -sh .whl
