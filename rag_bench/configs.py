"""The three cache configurations every run compares, and the paths an answer can take."""

from __future__ import annotations

from typing import Any

# name -> the request's "cache" options
CONFIGS: dict[str, dict[str, Any]] = {
    "no_cache": {"mode": "no-cache", "semantic": False},
    "exact": {"mode": "default", "semantic": False},
    "exact_semantic": {"mode": "default", "semantic": True},
}
LABELS = {"no_cache": "no cache", "exact": "exact only", "exact_semantic": "exact + semantic"}
PATHS = ("miss", "exact", "semantic")  # how a request's answer was served
