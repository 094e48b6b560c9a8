"""The whole factory's config: one YAML file with one section per stage.

Every `synthface` command that reads a factory config (``ids sample``,
``sample``, ``generate``) loads this model, so one file (e.g.
``configs/arc2face.yaml``) drives the whole run.
"""

from __future__ import annotations

from pydantic import Field

from synthface.config import StrictModel, load_config
from synthface.faces.config import FaceAnalysisConfig
from synthface.filtering.config import FilterConfig
from synthface.generation.config import GenerationConfig
from synthface.identity.config import IdentityConfig
from synthface.shards.config import RunConfig


class FactoryConfig(StrictModel):
    seed: int = Field(
        0, ge=0, le=2**64 - 1, description="Run seed (0 .. 2**64-1: larger ones would wrap): all randomness derives from it."
    )
    models_dir: str = Field("models", description="Local model folder (see `synthface models check`).")
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    faces: FaceAnalysisConfig = Field(default_factory=FaceAnalysisConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    run: RunConfig = Field(default_factory=RunConfig)


def load_factory_config(path=None, overrides=None) -> FactoryConfig:
    return load_config(FactoryConfig, path, overrides)
