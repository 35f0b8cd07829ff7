"""Structure library: crystals, amorphous random packings and user CIF files."""

from functools import cache

import numpy as np
import pytest
from ase.formula import Formula
from ase.io import write
from ase.neighborlist import neighbor_list

from py4dstem_prenet.simulate.structures import (
    StructureSpec,
    get_structure,
    list_structures,
    load_cif,
    random_packing,
)

AMU_PER_A3_TO_G_CM3 = 1.66053906660
CRYSTALS = [spec.name for spec in list_structures("crystal")]
AMORPHOUS = [spec.name for spec in list_structures("amorphous")]


def density(atoms):
    """Mass density in g/cm^3, computed independently of the module."""
    return atoms.get_masses().sum() / atoms.get_volume() * AMU_PER_A3_TO_G_CM3


def min_distance(atoms, cutoff=4.0):
    """Shortest interatomic distance (Å) under periodic boundary conditions (inf beyond cutoff)."""
    d = neighbor_list("d", atoms, cutoff)
    return float(d.min()) if d.size else np.inf


def composition(formula):
    counts = Formula(formula).count()
    total = sum(counts.values())
    return {el: n / total for el, n in counts.items()}


@cache
def built(name, seed=0, box=None):
    return get_structure(name).build(seed=seed, box=box)


def test_library_size_and_order():
    crystals, amorphous = list_structures("crystal"), list_structures("amorphous")
    assert len(crystals) >= 60
    assert len(amorphous) >= 8
    assert len({spec.prototype for spec in crystals}) >= 12
    everything = list_structures()
    names = [spec.name for spec in everything]
    assert names == sorted(names) and len(set(names)) == len(names) == len(crystals) + len(amorphous)
    assert names == [spec.name for spec in list_structures()]  # stable
    assert all(isinstance(spec, StructureSpec) for spec in everything)
    assert {spec.category for spec in everything} == {"crystal", "amorphous"}
    assert all(spec.density > 0 for spec in amorphous)
    with pytest.raises(ValueError, match="category"):
        list_structures("liquid")


def test_get_structure():
    spec = get_structure("Si_diamond")
    assert (spec.category, spec.prototype, spec.formula) == ("crystal", "diamond", "Si")
    assert get_structure("CuZr_glass").prototype == "metallic_glass"
    with pytest.raises(KeyError, match="Si_diamond"):
        get_structure("Si_diamnd")
    with pytest.raises(KeyError, match="unknown structure"):
        get_structure("unobtainium")


@pytest.mark.parametrize("name", CRYSTALS)
def test_crystal_is_valid(name):
    spec = get_structure(name)
    atoms = spec.build()
    assert len(atoms) > 0 and atoms.pbc.all()
    assert atoms.get_volume() > 0
    assert min_distance(atoms, 1.0) == np.inf, "atoms closer than 1.0 Å"
    assert min_distance(atoms) < 3.7, "nearest neighbour too far: wrong lattice constant?"
    assert 1.5 < density(atoms) < 23.0
    # the cell content is an integer number of formula units
    assert atoms.symbols.formula.reduce()[0].count() == Formula(spec.formula).reduce()[0].count()
    np.testing.assert_array_equal(spec.build(seed=7).positions, atoms.positions)  # seed is ignored


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Al_fcc", 2.70), ("Si_diamond", 2.33), ("MgO_rocksalt", 3.58), ("Al2O3_corundum", 3.99),
     ("TiO2_rutile", 4.25), ("SiO2_alpha_quartz", 2.65), ("MoS2_2H_TMD", 5.06), ("Fe3O4_spinel", 5.18)],
)  # fmt: skip
def test_crystal_literature_density(name, expected):
    assert density(built(name)) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("name", AMORPHOUS)
def test_amorphous_is_valid(name):
    spec = get_structure(name)
    atoms = built(name)
    assert atoms.pbc.all() and atoms.get_volume() > 0
    np.testing.assert_allclose(atoms.cell.lengths(), 16.0)
    np.testing.assert_allclose(atoms.cell.angles(), 90.0)
    assert density(atoms) == pytest.approx(spec.density, rel=0.15)
    assert density(atoms) == pytest.approx(spec.density, rel=0.03)  # actually much closer
    assert min_distance(atoms, 1.0) == np.inf, "atoms closer than 1.0 Å"
    assert atoms.info["min_distance_ratio"] > 0.99  # per-pair minimum distances are respected
    assert np.all((atoms.get_scaled_positions(wrap=False) >= 0) & (atoms.get_scaled_positions() < 1))
    fractions = composition(atoms.get_chemical_formula())
    for el, frac in composition(spec.formula).items():
        assert fractions[el] == pytest.approx(frac, abs=0.01)


@pytest.mark.parametrize("name", AMORPHOUS)
def test_amorphous_deterministic(name):
    spec = get_structure(name)
    a, b, c = spec.build(seed=3, box=10.0), spec.build(seed=3, box=10.0), spec.build(seed=4, box=10.0)
    np.testing.assert_allclose(a.cell.lengths(), 10.0)
    assert list(a.symbols) == list(b.symbols)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.positions.shape == c.positions.shape and not np.allclose(a.positions, c.positions)


def test_random_packing_options_and_errors():
    atoms = random_packing("SiO2", 2.2, {("Si", "Si"): 2.7, ("O", "O"): 2.3}, box=9.0, seed=1)
    assert atoms.get_chemical_formula(empirical=True) == "O2Si"
    assert min_distance(atoms) >= 2.3 * 0.99  # Si-O defaulted to the smaller like-pair distance
    with pytest.raises(ValueError, match="Si-Si"):
        random_packing("SiO2", 2.2, {("Si", "O"): 1.45, ("O", "O"): 2.3}, box=9.0)
    plain = random_packing("Cu", 5.0, 2.0, box=9.0, seed=1, relax_steps=0)
    assert min_distance(plain) >= 0.8 * 2.0 - 1e-9
    with pytest.raises(RuntimeError, match="could not place"):
        random_packing("Cu", 50.0, 2.5, box=8.0, max_trials=2000)
    with pytest.raises(ValueError, match="positive"):
        random_packing("Cu", -1.0, 2.0)


@pytest.mark.parametrize("name", ["TiO2_rutile", "MoS2_2H_TMD", "SiO2_alpha_quartz"])
def test_load_cif_round_trip(tmp_path, name):
    atoms = built(name)
    path = tmp_path / f"{name}.cif"
    write(path, atoms, format="cif")
    back = load_cif(path)
    assert back.pbc.all()
    assert back.get_chemical_formula() == atoms.get_chemical_formula()
    np.testing.assert_allclose(back.cell.cellpar(), atoms.cell.cellpar(), atol=1e-4)
    frac = np.sort(np.round(atoms.get_scaled_positions() % 1.0, 4) % 1.0, axis=0)
    frac_back = np.sort(np.round(back.get_scaled_positions() % 1.0, 4) % 1.0, axis=0)
    np.testing.assert_allclose(frac_back, frac, atol=2e-4)
    assert load_cif(str(path)).get_chemical_formula() == atoms.get_chemical_formula()


def test_load_cif_errors(tmp_path):
    missing = tmp_path / "missing.cif"
    with pytest.raises(FileNotFoundError, match="missing.cif"):
        load_cif(missing)
    with pytest.raises(FileNotFoundError):
        load_cif(tmp_path)  # a directory
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("this is not a CIF file\n\x01\x02 ###\n")
    with pytest.raises(ValueError, match="garbage.cif"):
        load_cif(garbage)
    empty = tmp_path / "empty.cif"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.cif"):
        load_cif(empty)


def test_cif_files_are_structures(tmp_path):
    """A user's CIF file can stand wherever a built-in structure name does (e.g. prenet simulate)."""
    import ase.io

    from py4dstem_prenet.simulate.structures import get_structure

    path = tmp_path / "my_gaas.cif"
    ase.io.write(path, get_structure("GaAs_zincblende").build())
    spec = get_structure(str(path))
    assert spec.category == "crystal" and spec.prototype == "cif"
    atoms = spec.build()
    assert atoms.pbc.all() and len(atoms) == len(get_structure("GaAs_zincblende").build())


def test_split_is_by_family():
    """Train / val / test never share a structure family, and both categories are held out."""
    from py4dstem_prenet.train.data import FAMILY_SPLIT, split_of

    by_family = {}
    for spec in list_structures():
        by_family.setdefault(spec.prototype, set()).add(split_of(spec.name))
    assert all(len(splits) == 1 for splits in by_family.values()), by_family
    for category in ("crystal", "amorphous"):
        splits = {split_of(s.name) for s in list_structures(category)}
        assert splits == {"train", "val", "test"}, category
    assert set(FAMILY_SPLIT) <= set(by_family)  # every named family exists
    assert split_of("Si_diamond") == "train" and split_of("NaCl_rocksalt") == "test"
    assert split_of("my_own.cif") in ("train", "val", "test")
