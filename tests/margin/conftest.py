"""Fixtures shared by the margin tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def case_dir(conformance_dir: Path) -> Path:
    """The Derive PMRM_2 case folder; skip when it is absent."""
    folder = conformance_dir / "derive_pmrm2"
    if not folder.is_dir():
        pytest.skip(f"Derive PMRM_2 cases not found at {folder}")
    return folder
