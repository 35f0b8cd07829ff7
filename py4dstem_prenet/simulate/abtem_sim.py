"""Clean 4D-STEM diffraction patterns from abTEM-based multislice simulations (one probe position each).

Geometry (exact, no resampling anywhere)
----------------------------------------
* The lateral cell is ``L x L`` with ``L = wavelength / (mrad_per_px * 1e-3)`` (Angstrom): the reciprocal
  pixel of the simulation, ``1 / L`` (1/Angstrom), *is* the detector pixel (``mrad_per_px`` mrad).
* The wave has ``N x N`` points, ``N`` = :func:`grid_points`: ``N >= 3 Q / sqrt 2`` so abTEM's antialiasing
  aperture (radius ``N / 3`` px) encloses the whole ``Q x Q`` detector, corners included, and
  ``L / N <= MAX_SAMPLING_A``.
* The ``fftshift``-ed ``N x N`` intensity has its zero frequency at pixel ``(N / 2, N / 2)`` (NumPy and abTEM
  alike, N even); the crop ``[N/2 - Q/2, N/2 + Q/2)`` puts it at ``(Q / 2, Q / 2)``, the package's detector
  centre (:func:`py4dstem_prenet.geometry.detector_center`). The probe is never tilted (the specimen is),
  so the optical axis is exactly there.
* abTEM arrays are indexed ``[x, y]`` (first axis = atoms' x, probe position ``(x, y)``), used directly as
  ``[qx, qy]``.
* Intensities are fractions of the incident electrons per pixel (abTEM's probe sums to 1 in reciprocal
  space; we divide by the measured incident sum anyway). Electrons scattered beyond the antialiasing
  aperture are lost, as they would miss a real detector, so a pattern sums to somewhat less than 1.

Physics: abTEM's probe (soft aperture, no aberrations), lobato scattering factors, interaction constant,
Fresnel propagator and antialiasing aperture; the projected potential of each ~2 Angstrom slice is
evaluated exactly from structure factors (see :func:`_transmission_slices` for why not abTEM's gridding).
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import ase
import numpy as np
from ase import units

#: Accelerating voltages drawn by :func:`draw_optics` (kV).
ENERGIES_KV = (80.0, 120.0, 200.0, 300.0)
#: Low-index zone axes (lattice-vector basis); signs and order are randomised when drawn.
ZONE_AXES = ((0, 0, 1), (0, 1, 1), (1, 1, 1), (0, 1, 2), (1, 1, 2), (0, 1, 3), (1, 2, 2), (1, 2, 3),
             (1, 1, 3), (1, 1, 4), (0, 2, 3), (1, 3, 4))
PHONON_SIGMA_A = 0.08  # frozen-phonon rms displacement (Angstrom)
SLICE_THICKNESS_A = 2.0  # nominal multislice slice thickness (Angstrom)
MAX_SAMPLING_A = 0.12  # coarsest real-space sampling of the wave (Angstrom)
MAX_EXTENT_A = 80.0  # upper bound on the lateral cell L (Angstrom), bounds mrad_per_px from below
MAX_ATOMS = 100_000  # thickness is reduced by :func:`fit_to_budget` so a slab holds at most this many
EDGE_MRAD = (20.0, 80.0)  # scattering angle reached at the pattern edge (Q / 2 px), log-uniform
SEMIANGLE_MRAD = (0.3, 30.0)  # probe convergence semi-angle, log-uniform
DISK_RADIUS_PX = (1.0, 0.2)  # BF disk radius bounds: at least 1 px, at most 0.2 Q px
THICKNESS_A = {"crystal": (20.0, 300.0), "amorphous": (20.0, 150.0)}
MAX_TILT_MRAD = 15.0


@dataclass(frozen=True)
class OpticsRanges:
    """The ranges :func:`draw_optics` draws from (a library's *recipe*; recorded in its attrs).

    energies_kv: voltages (kV), one drawn uniformly. edge_mrad: scattering angle at the pattern edge,
    log-uniform. semiangle_mrad: convergence semi-angle (mrad), log-uniform, within disk_radius_px =
    (min px, max fraction of Q). thickness_crystal_A / thickness_amorphous_A: uniform (Angstrom).
    max_tilt_mrad: tilt magnitude uniform in [0, max] off the zone axis, in a random direction; zero with
    probability p_zero_tilt. p_general: probability of a random high-index orientation instead of a
    low-index zone. p_phonons: probability of frozen phonons (when the library allows them).
    """

    energies_kv: tuple[float, ...] = ENERGIES_KV
    edge_mrad: tuple[float, float] = EDGE_MRAD
    semiangle_mrad: tuple[float, float] = SEMIANGLE_MRAD
    disk_radius_px: tuple[float, float] = DISK_RADIUS_PX
    thickness_crystal_A: tuple[float, float] = THICKNESS_A["crystal"]
    thickness_amorphous_A: tuple[float, float] = THICKNESS_A["amorphous"]
    max_tilt_mrad: float = MAX_TILT_MRAD
    p_zero_tilt: float = 0.3
    p_general: float = 0.3
    p_phonons: float = 0.15

    def thickness_A(self, category: str) -> tuple[float, float]:
        """Thickness range (Angstrom) of a ``category`` ("crystal"/"amorphous") specimen."""
        ranges = {"crystal": self.thickness_crystal_A, "amorphous": self.thickness_amorphous_A}
        if category not in ranges:
            raise ValueError(f"category must be one of {sorted(ranges)}, got {category!r}")
        return ranges[category]


#: Named recipes. "default": the training/evaluation draws used so far (80-300 kV, 2-30 nm crystals, tilts
#: up to 15 mrad). "hard": what microscopists meet at the hard end: 200/300 kV, 0.5-25 mrad convergence
#: (large disks overlap: radius up to Q/4), crystals and amorphous films 2-30 nm, tilts 0-1 degree
#: (17.45 mrad), only 10 % exactly on zone.
RECIPES = {
    "default": OpticsRanges(),
    "hard": OpticsRanges(energies_kv=(200.0, 300.0), semiangle_mrad=(0.5, 25.0), disk_radius_px=(1.0, 0.25),
                         thickness_crystal_A=(20.0, 300.0), thickness_amorphous_A=(20.0, 300.0),
                         max_tilt_mrad=1000 * math.radians(1.0), p_zero_tilt=0.1),
}


def get_recipe(recipe: str | OpticsRanges) -> OpticsRanges:
    """The :class:`OpticsRanges` of a recipe name (see :data:`RECIPES`) or the ranges themselves."""
    if isinstance(recipe, OpticsRanges):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"unknown optics recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[recipe]


@dataclass(frozen=True)
class OpticsParams:
    """Microscope and specimen settings of one simulated pattern.

    energy_kv: accelerating voltage (kV). semiangle_mrad: probe convergence semi-angle (mrad).
    mrad_per_px: detector angular pixel size (mrad). thickness_A: specimen thickness (Angstrom).
    zone_axis: direction ``[uvw]`` in the structure's lattice-vector basis put along the beam.
    tilt_mrad: extra specimen rotations about the x and y axes (mrad), applied after the zone alignment.
    inplane_deg: rotation of the specimen about the beam (degrees). phonon_configs: 0 for a static
    lattice, else the number of frozen-phonon configurations (sigma 0.08 Angstrom).
    detector: Q, pattern side length (pixels, even).
    """

    energy_kv: float
    semiangle_mrad: float
    mrad_per_px: float
    thickness_A: float
    zone_axis: tuple[int, int, int]
    tilt_mrad: tuple[float, float]
    inplane_deg: float
    phonon_configs: int
    detector: int


def wavelength_A(energy_kv: float) -> float:
    """Relativistic electron wavelength (Angstrom) at ``energy_kv`` (kV); same formula as abTEM."""
    e = energy_kv * 1e3
    return float(units._hplanck * units._c / math.sqrt(e * (2 * units._me * units._c**2 / units._e + e))
                 / units._e * 1e10)


def cell_extent_A(optics: OpticsParams) -> float:
    """Lateral cell size ``L`` (Angstrom) whose reciprocal pixel equals the detector pixel."""
    return wavelength_A(optics.energy_kv) / (optics.mrad_per_px * 1e-3)


def _fft_friendly(n: int) -> int:
    """Smallest even integer ``>= n`` with no prime factor above 5."""
    m = max(2, n + (n % 2))
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


def grid_points(detector: int, extent: float = 0.0) -> int:
    """Wave-function grid ``N`` (per side) for a ``Q x Q`` detector and an ``extent`` (Angstrom) cell.

    ``N >= 3 Q / sqrt 2`` so the antialiasing aperture (radius ``N / 3`` px) covers the detector corners, and
    ``N >= extent / MAX_SAMPLING_A`` so the potential is resolved well enough for dynamical scattering.
    """
    return _fft_friendly(max(math.ceil(3 * detector / math.sqrt(2)), math.ceil(extent / MAX_SAMPLING_A)))


def _rot(axis: int, angle: float) -> np.ndarray:
    """Right-handed rotation matrix by ``angle`` (radians) about Cartesian ``axis`` (0, 1, 2)."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i] = r[j, j] = c
    r[j, i], r[i, j] = s, -s
    return r


def orientation_matrix(cell: np.ndarray, optics: OpticsParams) -> np.ndarray:
    """Rotation ``R`` (lab = ``R @ crystal``) putting ``zone_axis`` along +z, then tilts, then in-plane.

    The zone alignment is the smallest rotation taking ``[uvw] @ cell`` onto z (identity for ``[001]`` of a
    cell with ``c`` along z); the tilts rotate about lab x then lab y; ``inplane_deg`` rotates about z.
    """
    d = np.asarray(optics.zone_axis, dtype=float) @ np.asarray(cell, dtype=float)
    if not np.linalg.norm(d) > 0:
        raise ValueError(f"zone axis {optics.zone_axis} is the zero vector")
    d /= np.linalg.norm(d)
    v, c = np.cross(d, [0.0, 0.0, 1.0]), d[2]
    s = np.linalg.norm(v)
    if s < 1e-12:
        r = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    else:
        k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]]) / s
        r = np.eye(3) + s * k + (1 - c) * k @ k
    tx, ty = (t * 1e-3 for t in optics.tilt_mrad)
    return _rot(2, math.radians(optics.inplane_deg)) @ _rot(1, ty) @ _rot(0, tx) @ r


def orient_slab(atoms: ase.Atoms, optics: OpticsParams, rng: np.random.Generator | None = None
                ) -> ase.Atoms:
    """Cut the oriented specimen box ``[0, L) x [0, L) x [0, thickness)`` (Angstrom) from a periodic
    structure.

    The structure is rotated by :func:`orientation_matrix` and tiled over the box; with ``rng`` the crystal
    is first shifted by a random fraction of its cell, so the probe (box centre) hits a random point of the
    unit cell. Returns an orthorhombic, laterally periodic :class:`ase.Atoms` (beam along z).
    """
    cell = np.asarray(atoms.cell.array, dtype=float)
    if abs(np.linalg.det(cell)) < 1e-6:
        raise ValueError("structure must have a full 3D periodic cell")
    L, T = cell_extent_A(optics), float(optics.thickness_A)
    R = orientation_matrix(cell, optics)
    frac0 = rng.random(3) if rng is not None else np.zeros(3)
    origin = np.array([L / 2, L / 2, T / 2]) - R @ (frac0 @ cell)  # lab position of the crystal origin
    corners = np.array([[x, y, z] for x in (0, L) for y in (0, L) for z in (0, T)]) - origin
    frac_corners = corners @ R @ np.linalg.inv(cell)  # (R^T x) @ inv(cell), row vectors
    lo, hi = np.floor(frac_corners.min(0)).astype(int) - 1, np.ceil(frac_corners.max(0)).astype(int) + 1
    basis = np.mod(atoms.get_scaled_positions(wrap=False), 1.0)
    numbers = atoms.numbers
    cart_cell = cell @ R.T  # rotated lattice vectors as rows
    pos_basis = basis @ cart_cell + origin
    pos, num = [], []
    n1, n2 = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
    plane = np.stack([n1.ravel(), n2.ravel(), np.zeros(n1.size)], 1) @ cart_cell
    for n3 in range(lo[2], hi[2]):  # one lattice plane at a time bounds memory
        p = (plane + n3 * cart_cell[2])[:, None, :] + pos_basis[None, :, :]
        keep = np.all((p >= 0) & (p < [L, L, T]), axis=-1)
        pos.append(p[keep])
        num.append(np.broadcast_to(numbers, keep.shape)[keep])
    slab = ase.Atoms(numbers=np.concatenate(num), positions=np.concatenate(pos).reshape(-1, 3),
                     cell=[L, L, T], pbc=True)
    return slab


def fit_to_budget(optics: OpticsParams, atoms: ase.Atoms, max_atoms: int = MAX_ATOMS) -> OpticsParams:
    """Reduce ``thickness_A`` (not below 10 Angstrom) so the slab holds about ``max_atoms`` atoms at most."""
    density = len(atoms) / abs(atoms.get_volume())  # atoms per cubic Angstrom
    t_max = max_atoms / (density * cell_extent_A(optics) ** 2)
    if optics.thickness_A <= t_max:
        return optics
    return replace(optics, thickness_A=float(max(10.0, math.floor(t_max))))


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(lo, hi)))))


def _draw_zone_axis(rng: np.random.Generator, p_general: float = 0.3) -> tuple[int, int, int]:
    if rng.random() < p_general:  # general orientation: a random high-index direction
        while True:
            uvw = rng.integers(-9, 10, size=3)
            if np.abs(uvw).max() >= 4 and math.gcd(*(int(i) for i in uvw)) == 1:
                return tuple(int(i) for i in uvw)
    uvw = np.array(ZONE_AXES[rng.integers(len(ZONE_AXES))])
    uvw = rng.permutation(uvw) * rng.choice([-1, 1], size=3)
    return tuple(int(i) for i in uvw)


def draw_optics(rng: np.random.Generator, detector: int, category: str,
                recipe: str | OpticsRanges = "default") -> OpticsParams:
    """Random optics for a ``detector x detector`` pattern of a ``category`` ("crystal"/"amorphous") model.

    Ranges from ``recipe`` (:class:`OpticsRanges` or a name in :data:`RECIPES`): energy uniform over
    ``energies_kv``; pattern edge angle log-uniform in ``edge_mrad`` (so ``mrad_per_px = edge / (Q / 2)``)
    with ``L <= MAX_EXTENT_A``; semi-angle log-uniform in ``semiangle_mrad`` with the BF disk radius kept
    within ``disk_radius_px``; thickness uniform; ``p_general`` general orientations; tilt 0 with
    probability ``p_zero_tilt``, else magnitude uniform up to ``max_tilt_mrad`` in a random direction;
    in-plane uniform; frozen phonons (4 or 8 configurations) with probability ``p_phonons``.
    """
    r = get_recipe(recipe)
    if detector % 2 or detector < 16:
        raise ValueError(f"detector must be an even number of pixels >= 16, got {detector}")
    t_range = r.thickness_A(category)
    energy = float(rng.choice(r.energies_kv))
    lam = wavelength_A(energy)
    lo = max(r.edge_mrad[0] / (detector / 2), lam / (MAX_EXTENT_A * 1e-3))
    mpp = _loguniform(rng, lo, max(lo, r.edge_mrad[1] / (detector / 2)))
    alpha = _loguniform(rng, max(r.semiangle_mrad[0], r.disk_radius_px[0] * mpp),
                        min(r.semiangle_mrad[1], r.disk_radius_px[1] * detector * mpp))
    thickness = float(rng.uniform(*t_range))
    zone = _draw_zone_axis(rng, r.p_general)
    if rng.random() < r.p_zero_tilt:
        tilt = (0.0, 0.0)
    else:
        mag, phi = rng.uniform(0, r.max_tilt_mrad), rng.uniform(0, 2 * math.pi)
        tilt = (float(mag * math.cos(phi)), float(mag * math.sin(phi)))
    inplane = float(rng.uniform(0, 360))
    phonons = int(rng.choice([4, 8])) if rng.random() < r.p_phonons else 0
    return OpticsParams(energy_kv=energy, semiangle_mrad=alpha, mrad_per_px=mpp, thickness_A=thickness,
                        zone_axis=zone, tilt_mrad=tilt, inplane_deg=inplane, phonon_configs=phonons,
                        detector=int(detector))


def _backend(device: str):
    """Array module and FFT module for ``device`` ("cpu": NumPy + scipy.fft, "gpu": CuPy)."""
    if device == "cpu":
        import scipy.fft

        return np, scipy.fft
    if device != "gpu":
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    try:
        import cupy
        import cupyx.scipy.fft

        cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # any CuPy / CUDA failure means no usable GPU
        raise RuntimeError(f"device='gpu' requested but CuPy/CUDA is unavailable: {err}") from err
    return cupy, cupyx.scipy.fft


def _phase_table(x: np.ndarray, m0: int, count: int, extent: float, xp) -> np.ndarray:
    """``exp(-2 pi i x m / extent)``, ``m = m0 .. m0 + count - 1``, as a ``(len(x), count)`` complex64 table.

    Built as the product of two short float64 tables (``m = 16 a + b``), which is exact to float32 and far
    cheaper than ``len(x) * count`` complex exponentials.
    """
    blocks = -(-count // 16)
    x = np.asarray(x, dtype=np.float64)[:, None]
    coarse = np.exp((-2j * np.pi / extent) * x * (m0 + 16 * np.arange(blocks)))
    fine = np.exp((-2j * np.pi / extent) * x * np.arange(16))
    table = (coarse[:, :, None] * fine[:, None, :]).reshape(len(x), -1)[:, :count]
    return xp.asarray(table.astype(np.complex64))


def _torch_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` through PyTorch, run inside :func:`_one_torch_thread` (see there)."""
    import torch

    return torch.from_numpy(a).matmul(torch.from_numpy(b)).numpy()


@contextmanager
def _one_torch_thread():
    """Run PyTorch on one thread: bit-identical structure factors whatever the process's thread settings
    (NumPy's OpenBLAS gives different last bits on 1 or 2 threads and cannot be changed once loaded)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _transmission_slices(slab: ase.Atoms, n: int, n_slices: int, energy_ev: float, xp, fft):
    """Yield the ``n x n`` transmission function of each slice of ``slab`` (complex64, abTEM normalisation).

    The projected potential is computed *exactly* (for the "infinite" projection, lobato parametrisation)
    from structure factors at every frequency inside abTEM's antialiasing aperture, so lattice periodicity
    and translation invariance hold to float precision (abTEM's own bilinear delta gridding breaks both:
    spurious off-lattice spots of a few % at coarse sampling). ``exp(i sigma V)`` is formed on a 1.5x finer
    grid, so its harmonics do not alias into the band, then band-limited by the antialiasing aperture.
    """
    from abtem.antialias import antialias_aperture
    from abtem.core.energy import energy2sigma
    from abtem.integrals import ScatteringFactorProjectionIntegrals
    from ase.data import chemical_symbols

    L = float(slab.cell[0, 0])
    dx = L / n
    nf = _fft_friendly(math.ceil(1.5 * n))
    aa = np.asarray(antialias_aperture((n, n), (1 / L, 1 / L), np), dtype=np.float32)
    K = int(n // 3)  # |m| <= K encloses the aperture (cutoff n / 3 px)
    while aa[K, 0] > 0:
        K += 1
    mx = np.arange(-K, K + 1)  # kx band (centred), ky half band 0..K
    band = np.ix_(mx % n, np.arange(K + 1))
    integrals = ScatteringFactorProjectionIntegrals("lobato")
    scatt = {}
    for z in np.unique(slab.numbers):
        f = np.asarray(integrals.get_scattering_factor(chemical_symbols[z], (n, n), (dx, dx), "cpu"))
        scatt[z] = xp.asarray((f[band] * aa[band] / (L * L)).astype(np.complex64))
    sigma = np.float32(energy2sigma(energy_ev))
    aa_full = xp.asarray(aa[np.ix_(mx % n, mx % n)] * (n * n) / (nf * nf))
    idx_f, idx_n = xp.asarray(mx % nf), xp.asarray(mx % n)
    slice_of = np.minimum((slab.positions[:, 2] * n_slices / slab.cell[2, 2]).astype(int), n_slices - 1)
    order = np.lexsort((slab.numbers, slice_of))
    pos, num, sl = slab.positions[order], slab.numbers[order], slice_of[order]
    bounds = np.searchsorted(sl, np.arange(n_slices + 1))
    ones = xp.ones((n, n), dtype=np.complex64)
    matmul = _torch_matmul if xp is np else xp.matmul
    for i in range(n_slices):
        a, b = bounds[i], bounds[i + 1]
        if a == b:
            yield ones
            continue
        vk = xp.zeros((2 * K + 1, K + 1), dtype=np.complex64)
        for z in np.unique(num[a:b]):
            p = pos[a:b][num[a:b] == z]
            ex, ey = _phase_table(p[:, 0], -K, 2 * K + 1, L, xp), _phase_table(p[:, 1], 0, K + 1, L, xp)
            vk += scatt[z] * matmul(ex.T, ey)  # exact structure factor on the band
        half = xp.zeros((nf, nf // 2 + 1), dtype=np.complex64)
        half[idx_f, : K + 1] = vk
        v = fft.irfft2(half, s=(nf, nf)) * np.float32(nf * nf)  # projected potential (abTEM units)
        t = fft.fft2(xp.exp((1j * sigma) * v.astype(np.float32)).astype(np.complex64))
        tn = xp.zeros((n, n), dtype=np.complex64)
        tn[idx_n[:, None], idx_n[None, :]] = t[idx_f[:, None], idx_f[None, :]] * aa_full
        yield fft.ifft2(tn).astype(np.complex64)


def simulate_pattern(atoms: ase.Atoms, optics: OpticsParams, seed: int = 0, device: str = "cpu"
                     ) -> np.ndarray:
    """Clean ``(Q, Q)`` float32 diffraction pattern (fraction of incident electrons per pixel) with the
    optical axis exactly at pixel ``(Q / 2, Q / 2)``.

    ``atoms``: periodic structure (any cell), oriented and cut by :func:`orient_slab`; ``seed`` draws its
    lattice offset and the frozen-phonon displacements (Gaussian, 0.08 Angstrom rms in x, y, z; intensities
    averaged over ``optics.phonon_configs`` configurations). One abTEM probe (soft aperture, no aberrations)
    at the box centre is propagated through ~2 Angstrom slices with abTEM's Fresnel propagator and
    antialiasing aperture. ``device``: "cpu" or "gpu" (CuPy; raises if unavailable). Deterministic: FFTs are
    scipy's / CuPy's (abTEM's default FFTW planner may pick different algorithms from run to run).
    """
    import abtem
    from abtem.antialias import antialias_aperture

    q = int(optics.detector)
    if q % 2 or q < 16:
        raise ValueError(f"detector must be an even number of pixels >= 16, got {q}")
    xp, fft = _backend(device)
    rng = np.random.default_rng(seed)
    slab = orient_slab(atoms, optics, rng)
    L = cell_extent_A(optics)
    n = grid_points(q, L)
    n_slices = max(1, round(optics.thickness_A / SLICE_THICKNESS_A))
    dz, energy = optics.thickness_A / n_slices, optics.energy_kv * 1e3
    with abtem.config.set({"dask.lazy": False, "fft": "numpy", "diagnostics.progress_bar": False}):
        probe = abtem.Probe(energy=energy, semiangle_cutoff=optics.semiangle_mrad, gpts=n, extent=L)
        incident = xp.asarray(probe.build(scan=(L / 2, L / 2), lazy=False).array.astype(np.complex64))
    k = np.fft.fftfreq(n, L / n)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    aperture = antialias_aperture((n, n), (1 / L, 1 / L), np)
    propagator = xp.asarray((np.exp(-1j * np.pi * wavelength_A(optics.energy_kv) * dz * k2) * aperture)
                            .astype(np.complex64))
    norm = float((abs(fft.fft2(incident)) ** 2).sum())  # 1 for abTEM's probe
    with _one_torch_thread() if xp is np else nullcontext():
        total = _multislice(slab, optics, incident, propagator, n, n_slices, rng, xp, fft)
    total = _to_numpy(fft.fftshift(total))  # zero frequency -> pixel (n // 2, n // 2), as abTEM's fftshift
    c = n // 2 - q // 2
    return (total[c:c + q, c:c + q] / (norm * max(1, optics.phonon_configs))).astype(np.float32)


def _multislice(slab, optics, incident, propagator, n, n_slices, rng, xp, fft):
    """Summed exit-wave diffraction intensity (unshifted, ``n x n``) over the frozen-phonon configurations."""
    total, L, energy = None, cell_extent_A(optics), optics.energy_kv * 1e3
    for _ in range(max(1, optics.phonon_configs)):
        specimen = slab
        if optics.phonon_configs > 0:
            specimen = slab.copy()
            specimen.positions += rng.normal(0.0, PHONON_SIGMA_A, (len(slab), 3))
            specimen.positions[:, :2] %= L
            specimen.positions[:, 2] = np.clip(specimen.positions[:, 2], 0.0, optics.thickness_A * (1 - 1e-9))
        psi = incident
        for t in _transmission_slices(specimen, n, n_slices, energy, xp, fft):
            psi = fft.ifft2(fft.fft2(psi * t) * propagator)
        intensity = abs(fft.fft2(psi)) ** 2
        total = intensity if total is None else total + intensity
    return total


def _to_numpy(arr) -> np.ndarray:
    return np.asarray(arr.get() if hasattr(arr, "get") else arr)  # CuPy -> NumPy
