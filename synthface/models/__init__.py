"""The local model folder: layout, `check`, `download`, `init_tiny`.

Every run reads its weights from one folder (layout in
:mod:`synthface.models.layout`, documented in docs/generation.md). Importing
this package is cheap: torch, diffusers and huggingface_hub load inside the
functions that need them.
"""

from synthface.models.check import FolderReport, check, require
from synthface.models.hub import download
from synthface.models.layout import MODEL_FILES, ModelFile
from synthface.models.tiny import init_tiny

__all__ = ["FolderReport", "MODEL_FILES", "ModelFile", "check", "download", "init_tiny", "require"]
