"""abTEM simulation core: exact pattern geometry, determinism and the resumable HDF5 pattern library."""

from __future__ import annotations

import dataclasses
import math

import h5py
import numpy as np
import pytest

pytest.importorskip("abtem")
ase_build = pytest.importorskip("ase.build")

from py4dstem_prenet.simulate import abtem_sim as sim  # noqa: E402
from py4dstem_prenet.simulate import library as lib  # noqa: E402

Q, A_AU, E_KV = 64, 4.078, 200.0
NAMES = ["Au_fcc", "Si_diamond", "C_amorphous"]
TINY = {"thickness_A": 6.0, "mrad_per_px": 1.2}  # thin specimen, small cell: fast library tests


def au() -> object:
    return ase_build.bulk("Au", "fcc", a=A_AU, cubic=True)


def optics(**kw) -> sim.OpticsParams:
    """Au [001], no tilt, L = 10 a (commensurate), thin, non-overlapping disks, unless overridden."""
    base = dict(energy_kv=E_KV, semiangle_mrad=2.0, mrad_per_px=sim.wavelength_A(E_KV) / (10 * A_AU) * 1e3,
                thickness_A=8.0, zone_axis=(0, 0, 1), tilt_mrad=(0.0, 0.0), inplane_deg=0.0, phonon_configs=0,
                detector=Q)
    return sim.OpticsParams(**{**base, **kw})


def centroid(p: np.ndarray, centre, radius: float) -> np.ndarray:
    """Intensity-weighted centre of mass (px) of ``p`` inside a disk of ``radius`` px around ``centre``."""
    qx, qy = np.indices(p.shape)
    w = p * (np.hypot(qx - centre[0], qy - centre[1]) < radius)
    return np.array([(w * qx).sum(), (w * qy).sum()]) / w.sum()


def test_centre_exact_for_centrosymmetric_zone_axis():
    p = sim.simulate_pattern(au(), optics(), seed=3)
    assert p.shape == (Q, Q) and p.dtype == np.float32
    assert 0.5 < p.sum() <= 1.0 + 1e-5  # fraction of the incident electrons
    np.testing.assert_allclose(centroid(p, (Q / 2, Q / 2), Q / 2 - 2), (Q / 2, Q / 2), atol=0.01)
    np.testing.assert_allclose(p, p[::-1, ::-1][np.arange(-1, Q - 1)][:, np.arange(-1, Q - 1)], atol=1e-6)


def test_reflections_where_the_lattice_says():
    mpp, phi = 0.55, 30.0  # incommensurate cell; in-plane rotation checks axis order and rotation sense
    p = sim.simulate_pattern(au(), optics(mrad_per_px=mpp, semiangle_mrad=0.8, inplane_deg=phi), seed=1)
    dist = (2 / A_AU) * sim.wavelength_A(E_KV) / (mpp * 1e-3)  # 200 reflection, px
    for angle in (phi, phi + 90, phi + 180):  # (200), (020), (-200): qx along x, qy along y
        expected = Q / 2 + dist * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        assert np.hypot(*(centroid(p, expected, 3) - expected)) < 0.5
        assert p[tuple(np.round(expected).astype(int))] > 10 * np.median(p)


def test_orientation_puts_zone_axis_on_beam():
    cell = ase_build.bulk("Zn", "hcp").cell.array  # non-orthogonal cell
    for uvw in [(1, 1, 0), (0, 0, 1), (2, -1, 3), (0, 0, -1)]:
        d = sim.orientation_matrix(cell, optics(zone_axis=uvw)) @ (np.array(uvw) @ cell)
        np.testing.assert_allclose(d / np.linalg.norm(d), [0, 0, 1], atol=1e-12)


def test_determinism_and_grid():
    o = optics(semiangle_mrad=8.0, mrad_per_px=0.9, zone_axis=(1, 1, 0), tilt_mrad=(3.0, -2.0),
               inplane_deg=17.0, phonon_configs=2)
    a, b = sim.simulate_pattern(au(), o, seed=5), sim.simulate_pattern(au(), o, seed=5)
    assert np.array_equal(a, b)
    assert not np.allclose(a, sim.simulate_pattern(au(), o, seed=6))
    draw = [sim.draw_optics(np.random.default_rng(s), 128, "crystal") for s in (7, 7, 8)]
    assert draw[0] == draw[1] != draw[2]
    n = sim.grid_points(128)
    assert n % 2 == 0 and n / 3 >= 128 / math.sqrt(2)  # antialias aperture covers the detector corners


def test_draw_optics_ranges():
    rng = np.random.default_rng(0)
    for q, cat in [(128, "crystal"), (256, "amorphous")] * 50:
        o = sim.draw_optics(rng, q, cat)
        assert o.energy_kv in sim.ENERGIES_KV and o.detector == q
        assert 0.3 <= o.semiangle_mrad <= 30 and o.semiangle_mrad / o.mrad_per_px <= q / 5 + 1e-9
        assert sim.cell_extent_A(o) <= sim.MAX_EXTENT_A + 1e-9
        assert sim.THICKNESS_A[cat][0] <= o.thickness_A <= sim.THICKNESS_A[cat][1]
        assert np.hypot(*o.tilt_mrad) <= sim.MAX_TILT_MRAD and any(o.zone_axis)
    with pytest.raises(ValueError):
        sim.draw_optics(rng, 63, "crystal")


def test_hard_recipe_ranges_and_default_unchanged():
    """The "hard" recipe spans 200/300 kV, 0.5-25 mrad, 2-30 nm, 0-1 degree; "default" draws as before."""
    rng, hard = np.random.default_rng(1), sim.RECIPES["hard"]
    drawn = [sim.draw_optics(rng, 128, cat, "hard") for cat in ("crystal", "amorphous") * 200]
    assert {o.energy_kv for o in drawn} == {200.0, 300.0}
    alpha = np.array([o.semiangle_mrad for o in drawn])
    assert alpha.min() >= 0.5 and alpha.max() <= 25 and alpha.max() > 15  # large, overlapping disks occur
    assert all(o.semiangle_mrad / o.mrad_per_px <= 128 / 4 + 1e-9 for o in drawn)
    tilt = np.array([np.hypot(*o.tilt_mrad) for o in drawn])
    assert tilt.max() <= hard.max_tilt_mrad and tilt.max() > 15 and math.isclose(hard.max_tilt_mrad,
                                                                                  1000 * math.pi / 180)
    assert max(o.thickness_A for o in drawn[1::2]) > 200  # amorphous films to 30 nm too
    for s in (3, 4):
        assert sim.draw_optics(np.random.default_rng(s), 64, "crystal") == sim.draw_optics(
            np.random.default_rng(s), 64, "crystal", sim.OpticsRanges())
    with pytest.raises(ValueError, match="unknown optics recipe"):
        sim.draw_optics(rng, 64, "crystal", "harder")


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    d = tmp_path_factory.mktemp("lib")
    kw = dict(n_patterns=3, seed=11, detector=Q, structures=NAMES, progress=False, _overrides=TINY)
    full = lib.generate_library(d / "full.h5", workers=2, **kw)
    part = lib.generate_library(d / "resumed.h5", workers=1, _max_new=2, **kw)  # "killed" after 2
    n_partial = len(lib.PatternLibrary(d / "resumed.h5"))
    resumed = lib.generate_library(d / "resumed.h5", workers=1, **kw)
    return d, kw, dict(full=full, part=part, resumed=resumed, n_partial=n_partial)


def test_library_resume_matches_fresh_generation(libraries):
    d, _, stats = libraries
    assert stats["n_partial"] == 2 and stats["part"]["n_done"] == 2
    assert stats["resumed"]["n_new"] == 1 and stats["resumed"]["n_done"] == 3
    assert stats["full"]["patterns_per_minute"] > 0
    with lib.PatternLibrary(d / "full.h5") as a, lib.PatternLibrary(d / "resumed.h5") as b:
        assert len(a) == len(b) == 3 and a.detector == Q
        assert np.array_equal(a.patterns(range(3)), b.patterns([0, 1, 2]))  # 2 workers == 1, resumed
        ma, mb = a.metadata(), b.metadata()
        for key in ma:
            assert np.array_equal(ma[key], mb[key]), key
        assert a.patterns([2, 0, 2]).shape == (3, Q, Q)
        np.testing.assert_array_equal(a.patterns([2, 0])[1], a.patterns(0)[0])


def test_library_metadata_round_trip(libraries):
    d, kw, _ = libraries
    with lib.PatternLibrary(d / "full.h5") as library:
        meta, stored, o0 = library.metadata(), library.patterns(0)[0], library.optics(0)
        for i in range(3):
            name, category, variant, o, seed = lib.draw_pattern_params(kw["seed"], i, NAMES, Q, False, TINY)
            assert (meta["structure"][i], meta["category"][i], meta["seed"][i]) == (name, category, seed)
            assert meta["structure_seed"][i] == variant and library.optics(i) == o
            assert tuple(meta["centre"][i]) == (Q / 2, Q / 2)
            assert all(np.all(meta[f.name][i] == getattr(o, f.name)) for f in dataclasses.fields(o))
    atoms = lib._build_structure(meta["structure"][0], int(meta["structure_seed"][0]))
    assert np.array_equal(sim.simulate_pattern(atoms, o0, seed=int(meta["seed"][0])), stored)


def test_library_rejects_mismatched_arguments(libraries):
    d, kw, _ = libraries
    with lib.PatternLibrary(d / "full.h5") as library:
        assert library.recipe == sim.RECIPES["default"]  # the recipe is recorded in full
    for change in ({"seed": 12}, {"detector": 32}, {"structures": NAMES[:2]}, {"_overrides": None},
                   {"recipe": "hard"}):
        with pytest.raises(ValueError, match="different arguments"):
            lib.generate_library(d / "full.h5", workers=1, **{**kw, **change})


def test_library_errors_on_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        lib.PatternLibrary(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not HDF5" * 64)
    with pytest.raises(ValueError, match="junk.h5"):
        lib.PatternLibrary(junk)
    with pytest.raises(ValueError, match="junk.h5"):
        lib.generate_library(junk, 2, seed=0, detector=Q, workers=1, structures=NAMES, progress=False)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not a py4dstem_prenet pattern library"):
        lib.PatternLibrary(other)
    with pytest.raises(KeyError):
        lib.generate_library(tmp_path / "new.h5", 2, seed=0, detector=Q, structures=["No_such"],
                             progress=False)


def test_library_records_its_recipe(tmp_path):
    """A "hard" library stores its full recipe and its patterns are drawn from it."""
    path = tmp_path / "hard.h5"
    lib.generate_library(path, 2, seed=4, detector=Q, workers=1, structures=NAMES, progress=False,
                         recipe="hard", _overrides=TINY)
    with lib.PatternLibrary(path) as library:
        assert library.recipe == sim.RECIPES["hard"] and len(library) == 2
        for i in range(2):
            _, _, _, o, _ = lib.draw_pattern_params(4, i, NAMES, Q, False, None, "hard")
            assert o.energy_kv in (200.0, 300.0)
