"""Shaped array aliases used across the margin engine (names say the axes)."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

FloatArray: TypeAlias = NDArray[np.float64]
IntArray: TypeAlias = NDArray[np.intp]
BoolArray: TypeAlias = NDArray[np.bool_]
StrArray: TypeAlias = NDArray[np.object_]

__all__ = ["BoolArray", "FloatArray", "IntArray", "StrArray"]
