"""The 6D rotation representation used by kinema's trajectories.

Convention (``ROT6D_CONVENTION = "rows"``): the 6 numbers are the FIRST TWO ROWS of the rotation matrix,
r6 = [R00, R01, R02, R10, R11, R12], as in PyTorch3D's ``matrix_to_rotation_6d``. Zhou et al. (2019) write the
first two COLUMNS instead; the two are transposes of each other: columns(R) == rows(R^T), i.e. the same numbers
describe the inverse rotation. Files from a columns-convention source are converted with
``rot6d_to_matrix(r6, convention="columns")``. The trajectory loaders pass 6D values through unchanged.

Decoding (6D -> matrix) is Gram-Schmidt: b1 = normalize(a1), b2 = normalize(a2 - (b1 . a2) b1), b3 = b1 x b2,
stacked as rows ("rows") or columns ("columns").
"""

from __future__ import annotations

import numpy as np

ROT6D_CONVENTION = "rows"
_CONVENTIONS = ("rows", "columns")


def _check_convention(convention: str) -> None:
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention: expected one of {_CONVENTIONS}, got {convention!r}")


def matrix_to_rot6d(matrix: np.ndarray, convention: str = ROT6D_CONVENTION) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> 6D (..., 6): the first two rows (or columns) flattened."""
    _check_convention(convention)
    matrix = np.asarray(matrix)
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix: expected shape (..., 3, 3), got {matrix.shape}")
    if convention == "columns":
        matrix = np.swapaxes(matrix, -1, -2)
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6).copy()


def rot6d_to_matrix(rot6d: np.ndarray, convention: str = ROT6D_CONVENTION) -> np.ndarray:
    """6D (..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt (exact inverse of :func:`matrix_to_rot6d`)."""
    _check_convention(convention)
    rot6d = np.asarray(rot6d, dtype=np.float64)
    if rot6d.shape[-1] != 6:
        raise ValueError(f"rot6d: expected shape (..., 6), got {rot6d.shape}")
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    norm1 = np.linalg.norm(a1, axis=-1, keepdims=True)
    b1 = a1 / np.maximum(norm1, 1e-12)
    a2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / np.maximum(np.linalg.norm(a2, axis=-1, keepdims=True), 1e-12)
    b3 = np.cross(b1, b2)
    matrix = np.stack([b1, b2, b3], axis=-2)  # rows
    return np.swapaxes(matrix, -1, -2) if convention == "columns" else matrix
