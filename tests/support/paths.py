"""Paths the tests need, computed once from this file's place in the checkout."""

from __future__ import annotations

from pathlib import Path

# tests/support/paths.py -> the repository's root.
ROOT = Path(__file__).resolve().parents[2]
