"""Identity bank stage: novel identity vectors on the ArcFace hypersphere.

Modules, one job each: ``config`` (the ``identity:`` section), ``samplers``
(uniform / gallery draws), ``packing`` (HyperFace-style separation),
``neighbours`` (blocked exact nearest neighbours), ``screens`` (separation and
novelty, with resampling), ``gallery`` (reading reference embeddings),
``jitter`` (per-image conditioning noise), ``bank`` (sampling and the Parquet
file), ``stats`` (summaries and histograms).
"""
