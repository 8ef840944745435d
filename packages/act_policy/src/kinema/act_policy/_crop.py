"""Coordinate-guided cropping: project the target's (x, y) into a fixed camera and crop around it.

A camera geometry is a pinhole in MuJoCo's convention: ``position`` (3,) in the world, ``rotation`` (3, 3) whose
columns are the camera's x (right), y (up) and z (backwards) axes in world coordinates (MuJoCo's ``cam_xmat``),
and the vertical field of view ``fovy`` in degrees. A world point p projects to normalized image coordinates

    c = R^T (p - position);  depth = -c_z;  f = 1 / (2 tan(fovy / 2))
    u = 0.5 + f * (H / W) * c_x / depth      (0 = left edge, 1 = right edge)
    v = 0.5 - f * c_y / depth                (0 = top row, 1 = bottom row)

A planar geometry ``{"plane": [[x_min, x_max], [y_min, y_max]]}`` is a top-down view of the world plane (the
2-D dock tasks of kinema.robot_data.sim.dock): u = (x - x_min) / (x_max - x_min), v = (y_max - y) / (y_max -
y_min); the height is ignored.

``ALOHA_CAMERAS`` holds the fixed cameras of gym-aloha's scenes, read from MuJoCo after ``mj_forward`` (the
tests check them against MuJoCo and against a rendered cube when the sim extra is installed). Wrist cameras
move with the arms and have no fixed geometry.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_S = math.sqrt(0.5)
ALOHA_CAMERAS: dict[str, dict] = {
    "top": {"position": [0.0, 0.6, 0.8], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fovy": 78.0},
    "angle": {"position": [0.0, 0.0, 0.6], "rotation": [[1, 0, 0], [0, _S, -_S], [0, _S, _S]], "fovy": 78.0},
    "left_pillar": {
        "position": [-0.5, 0.2, 0.6],
        "rotation": [
            [0.6246950475544243, 0.5339295579808736, -0.5698028822981898],
            [-0.7808688094430304, 0.4271436463846988, -0.4558423058385518],
            [0.0, 0.7297037292405271, 0.6837634587578277],
        ],
        "fovy": 78.0,
    },
    "right_pillar": {
        "position": [0.5, 0.2, 0.6],
        "rotation": [
            [0.6246950475544243, -0.5339295579808736, 0.5698028822981898],
            [0.7808688094430304, 0.4271436463846988, -0.4558423058385518],
            [0.0, 0.7297037292405271, 0.6837634587578277],
        ],
        "fovy": 78.0,
    },
}


def camera_geometries(config) -> dict[str, dict]:
    """{camera: geometry} for the config's cameras that have one (``crop_cameras``, else ``ALOHA_CAMERAS``).

    A ValueError when none of ``config.camera_names`` has a geometry, or a given geometry is malformed."""
    source = ALOHA_CAMERAS if config.crop_cameras is None else config.crop_cameras
    if not isinstance(source, dict):
        raise ValueError(
            f"ACTConfig.crop_cameras: expected {{camera: geometry}}, got {type(source).__name__}"
        )
    found = {}
    for camera in config.camera_names:
        if camera not in source:
            continue
        geometry = source[camera]
        if isinstance(geometry, dict) and "plane" in geometry:
            plane = torch.as_tensor(geometry["plane"], dtype=torch.float64)
            if plane.shape != (2, 2) or not bool((plane[:, 1] > plane[:, 0]).all()):
                raise ValueError(
                    f"ACTConfig.crop_cameras[{camera!r}]: expected plane [[x_min, x_max], [y_min, y_max]] with "
                    f"min < max, got {geometry['plane']!r}"
                )
            found[camera] = {"plane": plane}
            continue
        try:
            position = torch.tensor(geometry["position"], dtype=torch.float64)
            rotation = torch.tensor(geometry["rotation"], dtype=torch.float64)
            fovy = float(geometry["fovy"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"ACTConfig.crop_cameras[{camera!r}]: expected position (3,), rotation (3, 3) and fovy, got "
                f"{geometry!r} ({error})"
            ) from None
        if position.shape != (3,) or rotation.shape != (3, 3) or not 0 < fovy < 180:
            raise ValueError(
                f"ACTConfig.crop_cameras[{camera!r}]: expected position (3,), rotation (3, 3), 0 < fovy < 180"
            )
        found[camera] = {"position": position, "rotation": rotation, "fovy": fovy}
    if not found:
        raise ValueError(
            f"ACTConfig.coord_crop: none of the cameras {list(config.camera_names)} has a known geometry; "
            f"known: {sorted(source)} (give crop_cameras for others)"
        )
    return found


def project(points: torch.Tensor, geometry: dict, image_hw: tuple[int, int]) -> torch.Tensor:
    """World points (..., 3) -> normalized image coordinates (..., 2) as (u, v) in [0, 1] inside the image."""
    if "plane" in geometry:
        plane = geometry["plane"].to(points.device, points.dtype)
        u = (points[..., 0] - plane[0, 0]) / (plane[0, 1] - plane[0, 0])
        v = (plane[1, 1] - points[..., 1]) / (plane[1, 1] - plane[1, 0])
        return torch.stack([u, v], dim=-1)
    position = geometry["position"].to(points.device, points.dtype)
    rotation = geometry["rotation"].to(points.device, points.dtype)
    camera = (points - position) @ rotation  # (..., 3) = R^T (p - position), row-vector form
    depth = (-camera[..., 2]).clamp_min(1e-6)
    focal = 0.5 / math.tan(math.radians(geometry["fovy"]) / 2)  # in units of the image height
    height, width = image_hw
    u = 0.5 + focal * (height / width) * camera[..., 0] / depth
    v = 0.5 - focal * camera[..., 1] / depth
    return torch.stack([u, v], dim=-1)


def crop_around(images: torch.Tensor, centers: torch.Tensor, size: int) -> torch.Tensor:
    """Square crops of ``size`` pixels centred on ``centers``, bilinear, zeros outside the image.

    images (B, K, H, W) float (K channels); centers (B, 2) normalized (u, v) -> (B, K, size, size).
    """
    batch, channels, height, width = images.shape
    theta = torch.zeros(batch, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = size / width  # half-extent in grid units (-1..1 spans the image)
    theta[:, 1, 1] = size / height
    theta[:, 0, 2] = 2 * centers[:, 0].to(images.dtype) - 1
    theta[:, 1, 2] = 2 * centers[:, 1].to(images.dtype) - 1
    grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def target_heatmap(centers: torch.Tensor, image_hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """A Gaussian bump exp(-r^2 / (2 sigma^2)) peaking (value 1) at each target's pixel, r in units of the image
    height, so the backbone sees WHERE the target is, not only that there is one.

    centers (B, 2) normalized (u, v) -> (B, 1, H, W) in (0, 1]."""
    height, width = image_hw
    device, dtype = centers.device, torch.float32
    v = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height  # (H,) pixel centres
    u = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width  # (W,)
    du = (u[None, None, :] - centers[:, 0, None, None].to(dtype)) * (width / height)  # (B, 1, W)
    dv = v[None, :, None] - centers[:, 1, None, None].to(dtype)  # (B, H, 1)
    return torch.exp(-(du.pow(2) + dv.pow(2)) / (2 * sigma**2)).unsqueeze(1)  # (B, 1, H, W)
