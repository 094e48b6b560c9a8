"""Generation stage: Arc2Face identity conditioning and the batched generator.

``Arc2FaceGenerator.from_folder(models_dir, cfg)`` loads the parts from a model
folder (see :mod:`synthface.models`); ``.generate(id_vectors, seeds)`` returns
uint8 images. Heavy libraries load when the generator is built, not on import.
"""

from synthface.generation.config import GenerationConfig

__all__ = ["Arc2FaceGenerator", "GenerationConfig"]


def __getattr__(name: str):
    if name == "Arc2FaceGenerator":  # lazy: pulls in torch and diffusers
        from synthface.generation.generator import Arc2FaceGenerator

        return Arc2FaceGenerator
    raise AttributeError(name)
