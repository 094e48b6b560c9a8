"""Names fixed by the shard format: the sample-key index range and the class-size reasons."""

from __future__ import annotations

# A sample key ({id:07d}_{index:03d}) holds the image index in three digits: indices 0..999.
MAX_INDEX = 1000
# Candidate / class reasons of the class-size rounds (the parquet's reason / class_reason)
SHORT_CLASS_REASON = "short_class"  # fewer than images_per_id accepted when the candidate cap was spent
SURPLUS_REASON = "surplus"  # passed the filter, but its class already had images_per_id
