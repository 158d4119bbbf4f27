"""Where things are, for tests in any folder: the repository root, the tests and their helpers."""

from __future__ import annotations

from pathlib import Path

HELPERS_DIR = Path(__file__).resolve().parent
TESTS_DIR = HELPERS_DIR.parent
REPO_ROOT = TESTS_DIR.parent
FIXTURES_DIR = TESTS_DIR / "fixtures"
