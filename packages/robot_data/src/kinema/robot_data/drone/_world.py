"""Procedural terrain for drone flights: a height map and a ground texture, from one random generator.

The height map is fractal value noise (octaves of bilinearly upsampled random grids). The texture colours the
ground by a per-world palette (height and moisture choose between its colours), lays a patchwork of fields
(jittered-grid cells, each its own tint), scatters dark dots (trees, rocks) and modulates the brightness with
fine noise: plenty of detail at the scale of a few pixels, so camera motion is visible at 64x64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PALETTES = {
    # name: (prompt words, colours from low to high ground (RGB 0..255), dot colour)
    "farmland": (
        "green farmland, hedges and wooded hills",
        [(86, 130, 60), (120, 150, 70), (170, 160, 90), (70, 110, 55), (120, 120, 110)],
        (30, 60, 30),
    ),
    "desert": (
        "a sandy desert with rocky ridges",
        [(210, 180, 120), (190, 150, 100), (230, 200, 150), (160, 110, 80), (120, 90, 70)],
        (90, 70, 50),
    ),
    "autumn": (
        "autumn woodland and meadows",
        [(150, 140, 60), (190, 110, 40), (160, 60, 30), (110, 120, 50), (130, 100, 80)],
        (70, 40, 20),
    ),
    "alpine": (
        "alpine meadows, scree and snow",
        [(90, 140, 80), (120, 150, 100), (140, 140, 130), (190, 190, 190), (245, 245, 250)],
        (50, 70, 50),
    ),
    "savanna": (
        "a dry savanna with scattered trees",
        [(200, 180, 100), (180, 170, 90), (160, 150, 80), (140, 120, 70), (110, 90, 60)],
        (60, 80, 40),
    ),
}


@dataclass(frozen=True)
class World:
    """heights (G, G) metres over the square [-half_size, half_size]^2 (row i is y, column j is x, both
    increasing); texture (S, S, 3) uint8 mapped onto the same square (row 0 at y = +half_size)."""

    heights: np.ndarray
    texture: np.ndarray
    half_size: float
    palette: str

    @property
    def prompt(self) -> str:
        return f"A drone flies over {PALETTES[self.palette][0]}"

    def ground_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear height (metres) at world (x, y)."""
        g = self.heights.shape[0] - 1
        u = np.clip((np.asarray(x) + self.half_size) / (2 * self.half_size) * g, 0, g)
        v = np.clip((np.asarray(y) + self.half_size) / (2 * self.half_size) * g, 0, g)
        j, i = np.minimum(u.astype(int), g - 1), np.minimum(v.astype(int), g - 1)
        fu, fv = u - j, v - i
        h = self.heights
        top = h[i, j] * (1 - fu) + h[i, j + 1] * fu
        bottom = h[i + 1, j] * (1 - fu) + h[i + 1, j + 1] * fu
        return top * (1 - fv) + bottom * fv


def fractal_noise(
    rng: np.random.Generator, size: int, octaves: int, base_cells: int = 2, persistence: float = 0.5
) -> np.ndarray:
    """(size, size) value noise in about [-1, 1]: octave o is a (base_cells * 2^o + 1)^2 random grid, bilinearly
    upsampled, weighted persistence^o."""
    out = np.zeros((size, size), np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        cells = base_cells * 2**octave
        if cells >= size:
            break
        grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        x = np.linspace(0, cells, size, dtype=np.float32)
        i = np.minimum(x.astype(int), cells - 1)
        f = x - i
        rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
        out += amplitude * (rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None])
        total += amplitude
        amplitude *= persistence
    return out / max(total, 1e-6)


def _cells(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """(size, size) int: index of the nearest jittered grid point (cellular 'fields')."""
    n = max(1, size // cell)
    points = (np.arange(n)[:, None] + rng.random((n, n, 2))) * (size / n)  # (n, n, 2) [row, col]
    coords = np.arange(size) + 0.5
    ci = np.minimum((coords / (size / n)).astype(int), n - 1)
    best = np.full((size, size), np.inf, np.float32)
    label = np.zeros((size, size), np.int64)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            ri, rj = np.clip(ci + di, 0, n - 1), np.clip(ci + dj, 0, n - 1)
            pr = points[ri[:, None], rj[None, :], 0]
            pc = points[ri[:, None], rj[None, :], 1]
            d = (pr - coords[:, None]) ** 2 + (pc - coords[None, :]) ** 2
            closer = d < best
            best = np.where(closer, d, best)
            label = np.where(closer, ri[:, None] * n + rj[None, :], label)
    return label


def make_world(
    rng: np.random.Generator,
    grid: int = 257,
    texture_size: int = 1024,
    half_size: float = 200.0,
    contrast: float = 1.0,
) -> World:
    """A random world: relief of 8-25 m, a palette, fields of 8-20 m, dots of about 1 m.

    ``contrast`` scales how far each field's tint departs from the palette colour (1.0: about +-15% brightness;
    the same random draws at any value). Small renders need more: at 32x32 a field is a few pixels wide, and a
    sideways move changes the image far less than a pitch move (which moves the horizon) unless fields differ."""
    palette = sorted(PALETTES)[int(rng.integers(len(PALETTES)))]
    relief = float(rng.uniform(8.0, 25.0))
    heights = fractal_noise(rng, grid, octaves=7, base_cells=2, persistence=0.45)
    heights = (heights - heights.min()) / max(float(np.ptp(heights)), 1e-6) * relief

    s = texture_size
    metres_per_texel = 2 * half_size / s
    # heights at texture resolution (texture row 0 is +y, the height map's last row)
    rows = np.linspace(grid - 1, 0, s)
    cols = np.linspace(0, grid - 1, s)
    i0 = np.minimum(rows.astype(int), grid - 2)
    j0 = np.minimum(cols.astype(int), grid - 2)
    fi, fj = (rows - i0)[:, None], (cols - j0)[None, :]
    h = heights
    level = (
        h[i0][:, j0] * (1 - fi) * (1 - fj)
        + h[i0 + 1][:, j0] * fi * (1 - fj)
        + h[i0][:, j0 + 1] * (1 - fi) * fj
        + h[i0 + 1][:, j0 + 1] * fi * fj
    ) / max(relief, 1e-6)
    moisture = fractal_noise(rng, s, octaves=6, base_cells=3, persistence=0.55)
    colours = np.asarray(PALETTES[palette][1], np.float32)
    k = len(colours) - 1
    position = np.clip(level * 0.8 + moisture * 0.35 + 0.1, 0, 1) * k
    lo = np.minimum(position.astype(int), k - 1)
    frac = (position - lo)[..., None]
    image = colours[lo] * (1 - frac) + colours[lo + 1] * frac  # (s, s, 3)

    cell = max(2, int(rng.uniform(8.0, 20.0) / metres_per_texel))
    labels = _cells(rng, s, cell)
    tints = rng.uniform(0.7, 1.3, size=(labels.max() + 1, 3)).astype(np.float32)
    tints = 0.5 * tints + 0.5 * tints.mean(axis=1, keepdims=True)  # mostly brightness, a little hue
    tints = np.clip(1.0 + contrast * (tints - 1.0), 0.05, None)
    fields = fractal_noise(rng, s, octaves=4, base_cells=2) > -0.2  # fields cover most of the ground
    image = np.where(fields[..., None], image * tints[labels], image)

    density = float(rng.uniform(0.01, 0.05))
    dots = rng.random((s, s)) < density
    dots |= np.roll(dots, 1, axis=0) & (rng.random((s, s)) < 0.5)
    dots |= np.roll(dots, 1, axis=1) & (rng.random((s, s)) < 0.5)
    image = np.where(dots[..., None], np.asarray(PALETTES[palette][2], np.float32), image)

    image *= 1.0 + 0.18 * fractal_noise(rng, s, octaves=8, base_cells=8, persistence=0.7)[..., None]
    texture = np.clip(image, 0, 255).astype(np.uint8)
    return World(heights=heights.astype(np.float32), texture=texture, half_size=half_size, palette=palette)
