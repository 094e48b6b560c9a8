"""The ID-similarity filter: ``IdentityFilter(FilterConfig).filter_class(...)`` / ``.inter_class(...)``."""

from synthface.filtering.config import FilterConfig
from synthface.filtering.identity_filter import ClassDecision, IdentityFilter, ImageDecision

__all__ = ["ClassDecision", "FilterConfig", "IdentityFilter", "ImageDecision"]

