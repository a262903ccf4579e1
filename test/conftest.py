"""Test configuration: a deterministic Hypothesis profile."""

from hypothesis import settings

settings.register_profile(
    "presence", derandomize=True, deadline=None, max_examples=300, print_blob=True
)
settings.load_profile("presence")
