import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kinema.robot_data import ROT6D_CONVENTION, matrix_to_rot6d, rot6d_to_matrix


@pytest.fixture
def rotations():
    return Rotation.random(200, random_state=0)


def test_convention_is_first_two_rows(rotations):
    assert ROT6D_CONVENTION == "rows"
    matrices = rotations.as_matrix()
    r6 = matrix_to_rot6d(matrices)
    assert r6.shape == (200, 6)
    np.testing.assert_array_equal(r6[:, :3], matrices[:, 0, :])
    np.testing.assert_array_equal(r6[:, 3:], matrices[:, 1, :])
    columns = matrix_to_rot6d(matrices, convention="columns")
    np.testing.assert_array_equal(columns[:, :3], matrices[:, :, 0])
    np.testing.assert_array_equal(columns[:, 3:], matrices[:, :, 1])


def test_rows_and_columns_are_transposes(rotations):
    matrices = rotations.as_matrix()
    transposed = np.swapaxes(matrices, -1, -2)
    np.testing.assert_array_equal(matrix_to_rot6d(matrices, "columns"), matrix_to_rot6d(transposed, "rows"))
    # the same 6 numbers read in the other convention describe the inverse rotation
    other = rot6d_to_matrix(matrix_to_rot6d(matrices, "rows"), "columns")
    np.testing.assert_allclose(other, (rotations.inv()).as_matrix(), atol=1e-12)


@pytest.mark.parametrize("convention", ["rows", "columns"])
def test_round_trip_against_scipy_both_ways(rotations, convention):
    # scipy -> 6D -> matrix -> scipy
    back = Rotation.from_matrix(
        rot6d_to_matrix(matrix_to_rot6d(rotations.as_matrix(), convention), convention)
    )
    assert np.all((back * rotations.inv()).magnitude() < 1e-9)
    # 6D -> matrix -> scipy -> 6D
    r6 = matrix_to_rot6d(rotations.as_matrix(), convention)
    again = matrix_to_rot6d(Rotation.from_matrix(rot6d_to_matrix(r6, convention)).as_matrix(), convention)
    np.testing.assert_allclose(again, r6, atol=1e-12)


def test_gram_schmidt_projects_noisy_6d_to_a_rotation(rotations):
    rng = np.random.default_rng(1)
    r6 = matrix_to_rot6d(rotations.as_matrix()) * 3.0 + rng.normal(scale=1e-3, size=(200, 6))
    matrices = rot6d_to_matrix(r6)
    np.testing.assert_allclose(
        matrices @ np.swapaxes(matrices, -1, -2), np.broadcast_to(np.eye(3), (200, 3, 3)), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(matrices), 1.0, atol=1e-12)
    # the first row keeps the direction of the first three numbers
    direction = r6[:, :3] / np.linalg.norm(r6[:, :3], axis=1, keepdims=True)
    np.testing.assert_allclose(matrices[:, 0], direction, atol=1e-12)
    assert np.all((Rotation.from_matrix(matrices) * rotations.inv()).magnitude() < 1e-2)


def test_bad_input():
    with pytest.raises(ValueError, match="convention"):
        matrix_to_rot6d(np.eye(3), "diagonal")
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        rot6d_to_matrix(np.zeros(5))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        matrix_to_rot6d(np.zeros((3, 2)))
