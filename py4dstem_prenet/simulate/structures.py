"""Library of atomic structures (``ase.Atoms``) used as specimens for abTEM diffraction simulations.

Everything is built in code, without downloads or data files:

* **Crystals** (category ``"crystal"``): 108 materials of 25 prototypes, with
  room-temperature literature lattice constants in Å (cubic high-temperature or pseudo-cubic cells
  where noted). Prototypes that ``ase.build.bulk`` knows are built with it (conventional cubic
  cell for cubic lattices, hexagonal cell otherwise); the others come from
  ``ase.spacegroup.crystal`` with a space group number and Wyckoff positions. The cells are the
  conventional crystallographic ones, so hexagonal/trigonal cells are not orthogonal.
* **Amorphous** models (category ``"amorphous"``): random packings in a periodic cubic box (side
  16 Å by default, ``build(box=...)``) at a target mass density in g/cm^3. Atoms are inserted by
  random sequential addition with minimum-distance rejection (minimum image convention) at 0.8 of
  a per-species-pair minimum distance in Å, then pushed apart until every pair respects the full
  minimum distance (see :func:`random_packing`). The result is a hard-sphere-like packing with the
  right composition, density and nearest-neighbour distances, but no chemical short-range order
  (not a relaxed glass), which is adequate for diffuse amorphous rings. The models are
  deterministic functions of the seed and take well under a second for a 16-20 Å box.
* **User CIF files** through :func:`load_cif`.

Target densities of the amorphous models (g/cm^3, typical values for bulk glasses / deposited films):

=================  ============  =======
name               formula       density
=================  ============  =======
CuZr_glass         Cu50Zr50      7.33
PdSi_glass         Pd80Si20      10.40
FeB_glass          Fe80B20       7.40
NiP_glass          Ni80P20       7.80
C_amorphous        C             2.00
Si_amorphous       Si            2.28
Ge_amorphous       Ge            5.15
SiO2_amorphous     SiO2          2.20
Al2O3_amorphous    Al2O3         3.05
HfO2_amorphous     HfO2          9.00
Si3N4_amorphous    Si3N4         3.00
=================  ============  =======
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_masses, atomic_numbers
from ase.formula import Formula
from ase.spacegroup import crystal

__all__ = [
    "DEFAULT_AMORPHOUS_BOX",
    "StructureSpec",
    "density_g_cm3",
    "get_structure",
    "list_structures",
    "load_cif",
    "random_packing",
]

DEFAULT_AMORPHOUS_BOX = 16.0
"""Default side length (Å) of the periodic cubic box of the amorphous models."""

_AMU_PER_A3_TO_G_CM3 = 1.66053906660  # 1 amu / Å^3 in g / cm^3


@dataclass(frozen=True)
class StructureSpec:
    """Recipe for one structure of the library; :meth:`build` returns a fresh ``ase.Atoms``.

    Attributes:
        name: Unique identifier, ``"<formula>_<prototype>"`` for crystals (e.g. ``"Si_diamond"``),
            e.g. ``"CuZr_glass"`` or ``"SiO2_amorphous"`` for amorphous models.
        category: ``"crystal"`` or ``"amorphous"``.
        prototype: Structure type, e.g. ``"fcc"``, ``"rocksalt"``, ``"metallic_glass"``.
        formula: Chemical formula; for amorphous models it gives the composition
            (``"Cu50Zr50"`` is 50 at.% Cu, 50 at.% Zr).
        density: Target mass density in g/cm^3 (amorphous models); ``None`` for crystals, whose
            density follows from the lattice constants.
        params: Internal construction parameters (not part of equality or repr).
    """

    name: str
    category: str
    prototype: str
    formula: str
    density: float | None = None
    params: tuple = field(default=(), repr=False, compare=False)

    def build(self, seed: int = 0, *, box: float | None = None) -> Atoms:
        """Build the structure (``pbc=True``, lengths in Å).

        Args:
            seed: Random seed of amorphous models; crystals ignore it.
            box: Side (Å) of the cubic box of amorphous models, default
                :data:`DEFAULT_AMORPHOUS_BOX`; crystals ignore it.
        """
        kind, *args = self.params or (None,)
        if kind == "bulk":
            structure, symbols, a, c, u = args
            atoms = bulk(symbols, structure, a=a, c=c, u=u, cubic=structure in _CUBIC_BULK)
        elif kind == "spacegroup":
            spacegroup, setting, symbols, basis, cellpar = args
            atoms = crystal(
                symbols, basis, spacegroup=spacegroup, setting=setting, cellpar=cellpar, onduplicates="error"
            )
        elif kind == "cif":
            atoms = load_cif(self.name)
        elif kind == "packing":
            (pair_min,) = args
            atoms = random_packing(
                self.formula,
                self.density,
                dict(pair_min),
                box=DEFAULT_AMORPHOUS_BOX if box is None else box,
                seed=seed,
            )
        else:
            raise ValueError(f"structure {self.name!r} has no construction recipe; use get_structure()")
        atoms.pbc = True
        atoms.info.update(name=self.name, category=self.category, prototype=self.prototype)
        return atoms


def density_g_cm3(atoms: Atoms) -> float:
    """Mass density of a periodic cell in g/cm^3."""
    return float(atoms.get_masses().sum() / atoms.get_volume() * _AMU_PER_A3_TO_G_CM3)


# --------------------------------------------------------------------------------------------------
# Crystals built by ase.build.bulk: (prototype, formula, a [Å], c [Å] or None, u or None).
# ase's name for the B2 structure is "cesiumchloride"; prototype is the label used in the library.
# --------------------------------------------------------------------------------------------------
_CUBIC_BULK = {"fcc", "bcc", "diamond", "zincblende", "rocksalt", "fluorite", "cesiumchloride"}
_BULK_NAME = {"B2": "cesiumchloride"}

# fmt: off
_BULK_ROWS: list[tuple[str, str, float, float | None, float | None]] = [
    # fcc metals
    ("fcc", "Al", 4.0495, None, None), ("fcc", "Cu", 3.6149, None, None),
    ("fcc", "Au", 4.0782, None, None), ("fcc", "Ni", 3.5240, None, None),
    ("fcc", "Pt", 3.9242, None, None), ("fcc", "Ag", 4.0853, None, None),
    ("fcc", "Pb", 4.9508, None, None), ("fcc", "Pd", 3.8907, None, None),
    ("fcc", "Ir", 3.8390, None, None), ("fcc", "Rh", 3.8034, None, None),
    # bcc metals
    ("bcc", "Fe", 2.8665, None, None), ("bcc", "W", 3.1652, None, None),
    ("bcc", "Mo", 3.1470, None, None), ("bcc", "Cr", 2.8846, None, None),
    ("bcc", "Nb", 3.3004, None, None), ("bcc", "V", 3.0240, None, None),
    ("bcc", "Ta", 3.3013, None, None),
    # hcp metals (a, c)
    ("hcp", "Mg", 3.2094, 5.2108, None), ("hcp", "Ti", 2.9508, 4.6855, None),
    ("hcp", "Zn", 2.6649, 4.9468, None), ("hcp", "Zr", 3.2316, 5.1475, None),
    ("hcp", "Co", 2.5071, 4.0695, None), ("hcp", "Cd", 2.9794, 5.6186, None),
    ("hcp", "Be", 2.2858, 3.5843, None), ("hcp", "Ru", 2.7059, 4.2815, None),
    ("hcp", "Hf", 3.1964, 5.0511, None), ("hcp", "Re", 2.7610, 4.4560, None),
    # diamond
    ("diamond", "Si", 5.4310, None, None), ("diamond", "Ge", 5.6579, None, None),
    ("diamond", "C", 3.5668, None, None), ("diamond", "Sn", 6.4892, None, None),
    # zincblende
    ("zincblende", "GaAs", 5.6533, None, None), ("zincblende", "InP", 5.8687, None, None),
    ("zincblende", "ZnS", 5.4093, None, None), ("zincblende", "GaP", 5.4505, None, None),
    ("zincblende", "CdTe", 6.4810, None, None), ("zincblende", "InAs", 6.0583, None, None),
    ("zincblende", "AlAs", 5.6611, None, None), ("zincblende", "ZnSe", 5.6676, None, None),
    ("zincblende", "SiC", 4.3596, None, None), ("zincblende", "BN", 3.6157, None, None),
    ("zincblende", "InSb", 6.4794, None, None),
    # wurtzite (a, c, internal parameter u)
    ("wurtzite", "GaN", 3.1890, 5.1850, 0.377), ("wurtzite", "ZnO", 3.2498, 5.2066, 0.382),
    ("wurtzite", "AlN", 3.1120, 4.9820, 0.382), ("wurtzite", "InN", 3.5450, 5.7030, 0.377),
    ("wurtzite", "CdS", 4.1367, 6.7161, 0.377),
    # rocksalt
    ("rocksalt", "NaCl", 5.6402, None, None), ("rocksalt", "MgO", 4.2112, None, None),
    ("rocksalt", "NiO", 4.1771, None, None), ("rocksalt", "PbS", 5.9362, None, None),
    ("rocksalt", "TiN", 4.2420, None, None), ("rocksalt", "KCl", 6.2931, None, None),
    ("rocksalt", "LiF", 4.0263, None, None), ("rocksalt", "CaO", 4.8105, None, None),
    ("rocksalt", "TiC", 4.3285, None, None), ("rocksalt", "CoO", 4.2615, None, None),
    ("rocksalt", "PbTe", 6.4620, None, None),
    # CsCl (B2)
    ("B2", "CsCl", 4.1230, None, None), ("B2", "NiAl", 2.8870, None, None),
    ("B2", "CuZn", 2.9590, None, None), ("B2", "FeAl", 2.9090, None, None),
    # fluorite (ZrO2: cubic high-temperature / stabilised phase)
    ("fluorite", "CaF2", 5.4626, None, None), ("fluorite", "CeO2", 5.4110, None, None),
    ("fluorite", "ZrO2", 5.0700, None, None), ("fluorite", "UO2", 5.4704, None, None),
    ("fluorite", "BaF2", 6.2001, None, None), ("fluorite", "ThO2", 5.5997, None, None),
    ("fluorite", "SrF2", 5.7996, None, None),
]
# fmt: on


def _cub(a: float) -> tuple[float, ...]:
    return (a, a, a, 90.0, 90.0, 90.0)


def _tet(a: float, c: float) -> tuple[float, ...]:
    return (a, a, c, 90.0, 90.0, 90.0)


def _hex(a: float, c: float) -> tuple[float, ...]:
    return (a, a, c, 90.0, 90.0, 120.0)


_PEROVSKITE = ((0, 0, 0), (0.5, 0.5, 0.5), (0, 0.5, 0.5))  # Pm-3m: A 1a, B 1b, O 3c
_SPINEL = ((0.125, 0.125, 0.125), (0.5, 0.5, 0.5))  # Fd-3m origin 2: A 8a, B 16d (+ O 32e x,x,x)


def _rutile(u: float) -> tuple:  # P4_2/mnm: M 2a, O 4f (u, u, 0)
    return ((0, 0, 0), (u, u, 0))


def _corundum(z: float, x: float) -> tuple:  # R-3c hexagonal axes: M 12c (0,0,z), O 18e (x,0,1/4)
    return ((0, 0, z), (x, 0, 0.25))


def _tmd(z: float) -> tuple:  # P6_3/mmc: M 2c (1/3,2/3,1/4), X 4f (1/3,2/3,z)
    return ((1 / 3, 2 / 3, 0.25), (1 / 3, 2 / 3, z))


# --------------------------------------------------------------------------------------------------
# Crystals built by ase.spacegroup.crystal:
# (prototype, formula, space group, setting, symbols of the Wyckoff sites, fractional sites, cellpar)
# --------------------------------------------------------------------------------------------------
# fmt: off
_SPACEGROUP_ROWS: list[tuple[str, str, int, int, tuple[str, ...], tuple, tuple[float, ...]]] = [
    # cubic perovskites (BaTiO3, PbTiO3: cubic phase; LaAlO3, SrRuO3: pseudo-cubic)
    ("perovskite", "SrTiO3", 221, 1, ("Sr", "Ti", "O"), _PEROVSKITE, _cub(3.905)),
    ("perovskite", "BaTiO3", 221, 1, ("Ba", "Ti", "O"), _PEROVSKITE, _cub(4.006)),
    ("perovskite", "LaAlO3", 221, 1, ("La", "Al", "O"), _PEROVSKITE, _cub(3.790)),
    ("perovskite", "KTaO3", 221, 1, ("K", "Ta", "O"), _PEROVSKITE, _cub(3.989)),
    ("perovskite", "SrRuO3", 221, 1, ("Sr", "Ru", "O"), _PEROVSKITE, _cub(3.930)),
    ("perovskite", "PbTiO3", 221, 1, ("Pb", "Ti", "O"), _PEROVSKITE, _cub(3.970)),
    # rutile
    ("rutile", "TiO2", 136, 1, ("Ti", "O"), _rutile(0.3048), _tet(4.5937, 2.9587)),
    ("rutile", "SnO2", 136, 1, ("Sn", "O"), _rutile(0.3056), _tet(4.7374, 3.1864)),
    ("rutile", "RuO2", 136, 1, ("Ru", "O"), _rutile(0.3058), _tet(4.4919, 3.1066)),
    ("rutile", "IrO2", 136, 1, ("Ir", "O"), _rutile(0.3077), _tet(4.4983, 3.1544)),
    ("rutile", "GeO2", 136, 1, ("Ge", "O"), _rutile(0.3062), _tet(4.3966, 2.8626)),
    ("rutile", "MnO2", 136, 1, ("Mn", "O"), _rutile(0.3046), _tet(4.3983, 2.8730)),
    # spinels (Fe3O4 is inverse, Fe on both cation sites)
    ("spinel", "MgAl2O4", 227, 2, ("Mg", "Al", "O"), (*_SPINEL, (0.2624,) * 3), _cub(8.0832)),
    ("spinel", "Fe3O4", 227, 2, ("Fe", "Fe", "O"), (*_SPINEL, (0.2549,) * 3), _cub(8.3963)),
    ("spinel", "Co3O4", 227, 2, ("Co", "Co", "O"), (*_SPINEL, (0.2631,) * 3), _cub(8.0840)),
    ("spinel", "ZnAl2O4", 227, 2, ("Zn", "Al", "O"), (*_SPINEL, (0.2640,) * 3), _cub(8.0860)),
    ("spinel", "ZnFe2O4", 227, 2, ("Zn", "Fe", "O"), (*_SPINEL, (0.2600,) * 3), _cub(8.4410)),
    ("spinel", "MgCr2O4", 227, 2, ("Mg", "Cr", "O"), (*_SPINEL, (0.2612,) * 3), _cub(8.3330)),
    # corundum
    ("corundum", "Al2O3", 167, 1, ("Al", "O"), _corundum(0.3522, 0.3062), _hex(4.7589, 12.991)),
    ("corundum", "Fe2O3", 167, 1, ("Fe", "O"), _corundum(0.3553, 0.3059), _hex(5.0356, 13.749)),
    ("corundum", "Cr2O3", 167, 1, ("Cr", "O"), _corundum(0.3475, 0.3058), _hex(4.9607, 13.599)),
    ("corundum", "V2O3", 167, 1, ("V", "O"), _corundum(0.3463, 0.3120), _hex(4.9520, 14.003)),
    # layered transition-metal dichalcogenides, 2H polytype
    ("2H_TMD", "MoS2", 194, 1, ("Mo", "S"), _tmd(0.621), _hex(3.1604, 12.295)),
    ("2H_TMD", "WS2", 194, 1, ("W", "S"), _tmd(0.622), _hex(3.1532, 12.323)),
    ("2H_TMD", "MoSe2", 194, 1, ("Mo", "Se"), _tmd(0.621), _hex(3.2880, 12.927)),
    ("2H_TMD", "WSe2", 194, 1, ("W", "Se"), _tmd(0.621), _hex(3.2820, 12.960)),
    # layered hexagonal
    ("graphite", "C", 194, 1, ("C", "C"), ((0, 0, 0.25), (1 / 3, 2 / 3, 0.25)), _hex(2.464, 6.711)),
    ("hexagonal", "BN", 194, 1, ("B", "N"), ((1 / 3, 2 / 3, 0.25), (1 / 3, 2 / 3, 0.75)),
     _hex(2.504, 6.661)),
    ("AlB2", "MgB2", 191, 1, ("Mg", "B"), ((0, 0, 0), (1 / 3, 2 / 3, 0.5)), _hex(3.0860, 3.5240)),
    ("NiAs", "NiAs", 194, 1, ("Ni", "As"), ((0, 0, 0), (1 / 3, 2 / 3, 0.25)), _hex(3.6190, 5.0340)),
    # ordered intermetallics
    ("L1_2", "Cu3Au", 221, 1, ("Au", "Cu"), ((0, 0, 0), (0, 0.5, 0.5)), _cub(3.7493)),
    ("L1_2", "Ni3Al", 221, 1, ("Al", "Ni"), ((0, 0, 0), (0, 0.5, 0.5)), _cub(3.5720)),
    ("L1_0", "FePt", 123, 1, ("Fe", "Pt"), ((0, 0, 0), (0.5, 0.5, 0.5)), _tet(2.7238, 3.7130)),
    ("L1_0", "CuAu", 123, 1, ("Cu", "Au"), ((0, 0, 0), (0.5, 0.5, 0.5)), _tet(2.8044, 3.6730)),
    ("A15", "Nb3Sn", 223, 1, ("Sn", "Nb"), ((0, 0, 0), (0.25, 0, 0.5)), _cub(5.2890)),
    # other oxides / sulfides
    ("anatase", "TiO2", 141, 1, ("Ti", "O"), ((0, 0, 0), (0, 0, 0.2081)), _tet(3.7845, 9.5143)),
    ("cuprite", "Cu2O", 224, 1, ("O", "Cu"), ((0, 0, 0), (0.25, 0.25, 0.25)), _cub(4.2696)),
    ("pyrite", "FeS2", 205, 1, ("Fe", "S"), ((0, 0, 0), (0.3848, 0.3848, 0.3848)), _cub(5.4179)),
    # P3_221 with Si on 3a (x, 0, 2/3): Levien et al. (1980) coordinates shifted by z + 2/3
    ("alpha_quartz", "SiO2", 154, 1, ("Si", "O"), ((0.4697, 0, 2 / 3), (0.4135, 0.2669, 0.7858)),
     _hex(4.9134, 5.4052)),
]
# fmt: on

# --------------------------------------------------------------------------------------------------
# Amorphous models: (name, prototype, formula, density [g/cm^3], {pair: minimum distance [Å]}).
# Minimum distances are ~0.9 of the first-neighbour (bond) distances of the real materials; pairs
# that are not bonded in the real material (Si-Si in Pd-Si, O-O and cation-cation in oxides) get
# ~0.9 of their shortest non-bonded distance, which keeps like atoms apart.
# --------------------------------------------------------------------------------------------------
# fmt: off
_AMORPHOUS_ROWS: list[tuple[str, str, str, float, dict[str, float]]] = [
    ("CuZr_glass", "metallic_glass", "Cu50Zr50", 7.33, {"Cu-Cu": 2.25, "Cu-Zr": 2.50, "Zr-Zr": 2.85}),
    ("PdSi_glass", "metallic_glass", "Pd80Si20", 10.40, {"Pd-Pd": 2.50, "Pd-Si": 2.20, "Si-Si": 2.70}),
    ("FeB_glass", "metallic_glass", "Fe80B20", 7.40, {"Fe-Fe": 2.30, "Fe-B": 1.90, "B-B": 2.60}),
    ("NiP_glass", "metallic_glass", "Ni80P20", 7.80, {"Ni-Ni": 2.30, "Ni-P": 2.05, "P-P": 2.80}),
    ("C_amorphous", "amorphous_covalent", "C", 2.00, {"C-C": 1.35}),
    ("Si_amorphous", "amorphous_covalent", "Si", 2.28, {"Si-Si": 2.10}),
    ("Ge_amorphous", "amorphous_covalent", "Ge", 5.15, {"Ge-Ge": 2.20}),
    ("SiO2_amorphous", "amorphous_oxide", "SiO2", 2.20, {"Si-O": 1.45, "O-O": 2.35, "Si-Si": 2.75}),
    ("Al2O3_amorphous", "amorphous_oxide", "Al2O3", 3.05, {"Al-O": 1.60, "O-O": 2.50, "Al-Al": 2.80}),
    ("HfO2_amorphous", "amorphous_oxide", "HfO2", 9.00, {"Hf-O": 1.90, "O-O": 2.50, "Hf-Hf": 3.10}),
    ("Si3N4_amorphous", "amorphous_nitride", "Si3N4", 3.00, {"Si-N": 1.55, "N-N": 2.50, "Si-Si": 2.70}),
]
# fmt: on


def _make_specs() -> dict[str, StructureSpec]:
    specs: list[StructureSpec] = []
    for prototype, formula, a, c, u in _BULK_ROWS:
        params = ("bulk", _BULK_NAME.get(prototype, prototype), formula, a, c, u)
        specs.append(StructureSpec(f"{formula}_{prototype}", "crystal", prototype, formula, params=params))
    for prototype, formula, sg, setting, symbols, basis, cellpar in _SPACEGROUP_ROWS:
        params = ("spacegroup", sg, setting, symbols, basis, cellpar)
        specs.append(StructureSpec(f"{formula}_{prototype}", "crystal", prototype, formula, params=params))
    for name, prototype, formula, density, pairs in _AMORPHOUS_ROWS:
        pair_min = tuple((tuple(key.split("-")), d) for key, d in pairs.items())
        specs.append(StructureSpec(name, "amorphous", prototype, formula, density, ("packing", pair_min)))
    table = {spec.name: spec for spec in specs}
    if len(table) != len(specs):  # pragma: no cover - table consistency
        raise RuntimeError("duplicate structure names in the structure tables")
    return dict(sorted(table.items()))


_SPECS = _make_specs()


def list_structures(category: str | None = None) -> list[StructureSpec]:
    """All structures of the library sorted by name, optionally only one category.

    Args:
        category: ``"crystal"``, ``"amorphous"`` or ``None`` (all).
    """
    if category not in (None, "crystal", "amorphous"):
        raise ValueError(f"category must be 'crystal', 'amorphous' or None, got {category!r}")
    return [spec for spec in _SPECS.values() if category is None or spec.category == category]


def get_structure(name: str) -> StructureSpec:
    """The :class:`StructureSpec` called ``name``; ``KeyError`` naming close matches if unknown.

    A name ending in ``.cif`` is a user's CIF file (a crystal, read by :func:`load_cif` when built), so
    ``prenet simulate --structures my.cif Si_diamond`` mixes one's own structures with the built-in ones.
    """
    if str(name).lower().endswith(".cif"):
        atoms = load_cif(name)
        return StructureSpec(name=str(name), category="crystal", prototype="cif",
                             formula=atoms.get_chemical_formula(), params=("cif",))
    try:
        return _SPECS[name]
    except KeyError:
        lowered = {key.lower(): key for key in _SPECS}
        close = [lowered[k] for k in difflib.get_close_matches(str(name).lower(), lowered, n=6, cutoff=0.5)]
        hint = f"close matches: {', '.join(close)}" if close else f"{len(_SPECS)} names in list_structures()"
        raise KeyError(f"unknown structure {name!r}; {hint}") from None


def load_cif(path: str | PathLike[str]) -> Atoms:
    """Read the first structure of a CIF file as periodic ``ase.Atoms`` (positions in Å).

    Raises:
        FileNotFoundError: ``path`` is not an existing file.
        ValueError: the file cannot be parsed as CIF, holds no atoms or no 3D cell.
    """
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIF file not found: {path}")
    try:
        atoms = read(path, index=0, format="cif")
    except Exception as exc:  # ase raises many different types on malformed input
        raise ValueError(f"could not read CIF file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise ValueError(f"CIF file {path} holds no atoms")
    if atoms.cell.rank < 3 or abs(atoms.cell.volume) < 1e-6:
        raise ValueError(f"CIF file {path} has no valid 3D unit cell")
    atoms.pbc = True
    atoms.info.setdefault("name", path.stem)
    return atoms


def random_packing(
    formula: str,
    density: float,
    pair_min: Mapping[tuple[str, str], float] | float,
    box: float = DEFAULT_AMORPHOUS_BOX,
    seed: int = 0,
    rsa_scale: float = 0.8,
    relax_steps: int = 300,
    max_trials: int = 200_000,
) -> Atoms:
    """Random packing of atoms in a periodic cubic box at a target density.

    The number of formula units is chosen so that the mass density is as close as possible to
    ``density``. Atoms are inserted in random species order by random sequential addition: a
    uniformly random trial position is rejected if it lies closer than ``rsa_scale`` times the
    pair's minimum distance to any placed atom (minimum image convention). Overlaps with respect to
    the full minimum distances are then removed by up to ``relax_steps`` deterministic push-apart
    iterations (hard-sphere-like relaxation), which reaches higher packing fractions than plain
    random sequential addition. Deterministic for a given ``seed``.

    Args:
        formula: Composition, e.g. ``"SiO2"`` or ``"Cu50Zr50"`` (reduced to integer formula units).
        density: Target mass density in g/cm^3.
        pair_min: Minimum distance in Å per unordered species pair, ``{("Si", "O"): 1.45, ...}``,
            or one distance for all pairs. A missing unlike pair defaults to the smaller of its
            two like-pair distances; like pairs are required.
        box: Side of the cubic box in Å.
        seed: Random seed.
        rsa_scale: Fraction of the minimum distances enforced strictly during insertion.
        relax_steps: Maximum number of push-apart iterations (0: plain random sequential addition).
        max_trials: Cap on rejected trial positions per atom before giving up.

    Returns:
        Periodic ``ase.Atoms``; ``info["min_distance_ratio"]`` is the smallest ratio of a pair
        distance to its minimum distance (1.0 when all constraints are met).

    Raises:
        ValueError: non-positive density or box, or a pair without minimum distance.
        RuntimeError: an atom cannot be inserted (box too small or distances too large).
    """
    if not (density > 0 and box > 0):
        raise ValueError(f"density and box must be positive, got density={density}, box={box}")
    reduced, _ = Formula(formula).reduce()
    fu = reduced.count()
    elements = sorted(fu, key=lambda el: atomic_numbers[el])
    fu_mass = sum(atomic_masses[atomic_numbers[el]] * n for el, n in fu.items())
    n_fu = max(1, round(density / _AMU_PER_A3_TO_G_CM3 * box**3 / fu_mass))
    species = np.repeat(np.arange(len(elements)), [fu[el] * n_fu for el in elements])
    dmin = _pair_matrix(elements, pair_min)

    rng = np.random.default_rng(seed)
    species = species[rng.permutation(species.size)]
    dmin2 = (rsa_scale * dmin) ** 2
    positions = np.empty((species.size, 3))
    for i, s in enumerate(species):
        limit = dmin2[s, species[:i]]
        batch, tried = 16, 0
        while True:
            trial = rng.random((batch, 3)) * box
            delta = trial[:, None, :] - positions[None, :i, :]
            delta -= box * np.round(delta / box)
            ok = np.flatnonzero(((delta * delta).sum(axis=-1) >= limit).all(axis=1))
            if ok.size:
                positions[i] = trial[ok[0]]
                break
            tried += batch
            if tried >= max_trials:
                raise RuntimeError(
                    f"random_packing({formula!r}): could not place atom {i + 1}/{species.size} after "
                    f"{tried} trials; use a larger box, lower density or smaller minimum distances"
                )
            batch = min(2 * batch, 4096)

    positions = _push_apart(positions, dmin[species[:, None], species[None, :]], box, relax_steps)
    order = np.argsort(species, kind="stable")
    symbols = [elements[s] for s in species[order]]
    atoms = Atoms(symbols, positions=positions[order], cell=[box, box, box], pbc=True)
    ratio = _distances(positions, box) / dmin[species[:, None], species[None, :]]
    np.fill_diagonal(ratio, np.inf)
    atoms.info.update(target_density_g_cm3=density, min_distance_ratio=float(ratio.min()))
    if relax_steps > 0 and ratio.min() < 0.95:
        warnings.warn(
            f"random_packing({formula!r}): minimum distances only met to {ratio.min():.0%} after "
            f"{relax_steps} relaxation steps; lower the density or the minimum distances",
            RuntimeWarning,
            stacklevel=2,
        )
    return atoms


def _pair_matrix(elements: list[str], pair_min: Mapping[tuple[str, str], float] | float) -> np.ndarray:
    """Symmetric matrix of minimum distances (Å) between the species ``elements``."""
    if not isinstance(pair_min, Mapping):
        return np.full((len(elements), len(elements)), float(pair_min))
    dmin = np.zeros((len(elements), len(elements)))
    for i, a in enumerate(elements):
        for j, b in enumerate(elements):
            d = pair_min.get((a, b), pair_min.get((b, a)))
            if d is None:
                d = min(pair_min.get((a, a), np.inf), pair_min.get((b, b), np.inf))
            if not np.isfinite(d):
                raise ValueError(f"no minimum distance for the pair {a}-{b}")
            dmin[i, j] = d
    return dmin


def _distances(positions: np.ndarray, box: float) -> np.ndarray:
    """All minimum-image distances (Å) in a cubic periodic box of side ``box``."""
    delta = positions[:, None, :] - positions[None, :, :]
    delta -= box * np.round(delta / box)
    return np.sqrt((delta * delta).sum(axis=-1))


def _push_apart(positions: np.ndarray, dmin: np.ndarray, box: float, steps: int) -> np.ndarray:
    """Remove overlaps (distance < ``dmin[i, j]``) by moving both atoms apart along their bond.

    Candidate pairs come from a Verlet list (skin 0.6 Å), rebuilt when an atom has moved more than
    half the skin since the last build.
    """
    positions = positions.copy()  # unwrapped during the iterations; minimum image handles it
    skin = 0.6
    reference = None
    for _ in range(steps):
        if reference is None or np.abs(positions - reference).max() > 0.5 * skin:
            reference = positions.copy()
            i, j = np.nonzero(np.triu(_distances(positions, box) < dmin + skin, k=1))
            target = dmin[i, j]
        delta = positions[i] - positions[j]
        delta -= box * np.round(delta / box)
        r = np.sqrt((delta * delta).sum(axis=-1))
        overlap = target - r
        hit = overlap > 1e-4 * target
        if not hit.any():
            break
        push = delta[hit] * (0.5 * overlap[hit] / np.maximum(r[hit], 1e-6))[:, None]
        np.add.at(positions, i[hit], push)
        np.add.at(positions, j[hit], -push)
    positions = np.mod(positions, box)
    positions[positions >= box] = 0.0  # np.mod can round tiny negative values up to box
    return positions
