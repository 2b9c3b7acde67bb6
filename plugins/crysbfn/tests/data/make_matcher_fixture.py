#!/usr/bin/python3
"""Writes matcher_pymatgen_pairs.json: StructureMatcher reference values from pymatgen.

Run once with Debian's Python (python3-pymatgen 2022.11.7, numpy), from anywhere:

    /usr/bin/python3 plugins/crysbfn/tests/data/make_matcher_fixture.py

The pairs are built from the perov-5 crystals in plugins/crysbfn/data/perov_5/ with a fixed
seed, so the output is reproducible. Each pair is (s1, s2) = (prediction, reference), and the
answer recorded is pymatgen's

    StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10, primitive_cell=True, scale=True,
                     attempt_supercell=False, allow_subset=False).get_rms_dist(s1, s2)

(the CDVAE/DiffCSP match-rate evaluation): "match" = result is not None, "rms" and
"max_dist" its two numbers (null when not matched). Every input number is rounded to 10
decimals before pymatgen sees it, so the fixture holds exactly the doubles pymatgen used.

Kinds of pairs (see KINDS below): a crystal with itself (exact, with permuted sites and a
global translation, with a different basis of the same lattice), with itself perturbed by
Gaussian coordinate noise and lattice strain of several sizes, isotropically rescaled, with two
sites of different species swapped, with another crystal of the same composition (perov-5
polymorphs), with a different crystal (composition differs), "generated"-like heavy
perturbations (lattice lengths and angles far off, per-site fractional noise, a site moved at
random), CSP-sample-like predictions (atom order kept, von Mises fractional noise, float32
values), the same with the roles reversed and two samples against each other, structurally
invalid predictions (two sites closer than 0.5 Å), and single-species controls (every site
relabelled to one element).
"""
import csv
import gzip
import io
import json
import os
import random
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
from pymatgen.analysis.structure_matcher import StructureMatcher  # noqa: E402
from pymatgen.core import Element, Lattice, Structure  # noqa: E402
import pymatgen.core  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "data", "perov_5")
OUT = os.path.join(HERE, "matcher_pymatgen_pairs.json")
SEED = 20240607
DIGITS = 10

MATCHER = dict(stol=0.5, ltol=0.3, angle_tol=10.0, primitive_cell=True, scale=True, attempt_supercell=False,
               allow_subset=False)


def load(split, limit=None):
    out = []
    with gzip.open(os.path.join(DATA, f"{split}.csv.gz"), "rt") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if limit is not None and i >= limit:
                break
            s = Structure.from_str(row["cif"], fmt="cif")
            out.append((f"{split}:{row['material_id']}", s))
    return out


def pack(lattice, z, frac):
    """Rounded plain-list form (what goes into the fixture)."""
    lat = [round(float(x), DIGITS) + 0.0 for x in np.asarray(lattice).reshape(-1)]
    fr = [round(float(x), DIGITS) + 0.0 for x in np.asarray(frac).reshape(-1)]
    return {"lattice": lat, "z": [int(v) for v in z], "frac": fr}


def unpack(d):
    lat = Lattice(np.array(d["lattice"], dtype=float).reshape(3, 3))
    frac = np.array(d["frac"], dtype=float).reshape(-1, 3)
    return Structure(lat, [Element.from_Z(v) for v in d["z"]], frac)


def parts(s):
    return s.lattice.matrix.copy(), [site.specie.Z for site in s], s.frac_coords.copy()


# ---- perturbations ----------------------------------------------------------------------------

def permuted(rng, lat, z, frac):
    p = rng.permutation(len(z))
    return lat, [z[i] for i in p], frac[p]


def translated(rng, lat, z, frac):
    return lat, z, frac + rng.uniform(-1, 1, size=3)


def coord_noise(rng, lat, z, frac, sigma_ang):
    """Gaussian Cartesian noise of sigma_ang Å per component."""
    cart = frac @ lat + rng.normal(0, sigma_ang, size=frac.shape)
    return lat, z, cart @ np.linalg.inv(lat)


def strained(rng, lat, z, frac, eps):
    """Lattice L (I + E), E symmetric with N(0, eps) entries; fractional coordinates kept."""
    e = rng.normal(0, eps, size=(3, 3))
    e = (e + e.T) / 2
    return lat @ (np.eye(3) + e), z, frac


def rescaled(rng, lat, z, frac, factor):
    return lat * factor, z, frac


def rebased(rng, lat, z, frac, negative_ok=False):
    """The same crystal in another basis: M L with M integer, |det M| = 1, entries in -1..1."""
    while True:
        m = rng.integers(-1, 2, size=(3, 3))
        d = round(np.linalg.det(m))
        if d == 1 or (negative_ok and d == -1):
            break
    return m @ lat, z, frac @ np.linalg.inv(m)


def swapped(rng, lat, z, frac):
    """Two sites of different species exchange their species."""
    z = list(z)
    pairs = [(i, j) for i in range(len(z)) for j in range(i + 1, len(z)) if z[i] != z[j]]
    i, j = pairs[rng.integers(len(pairs))]
    z[i], z[j] = z[j], z[i]
    return lat, z, frac


def generated(rng, lat, z, frac, level):
    """A CSP-sample-like structure: lattice lengths scaled independently, angles moved, per-site
    fractional noise, sometimes one site placed at random. `level` 0..3 sets the sizes."""
    a, b, c, al, be, ga = Lattice(lat).parameters
    ls = [0.04, 0.08, 0.15, 0.25][level]
    an = [2.0, 5.0, 9.0, 14.0][level]
    fs = [0.02, 0.04, 0.07, 0.10][level]
    lengths = np.array([a, b, c]) * np.exp(rng.normal(0, ls, size=3))
    angles = np.clip(np.array([al, be, ga]) + rng.normal(0, an, size=3), 60, 120)
    new = Lattice.from_parameters(*lengths, *angles)
    f = frac + rng.normal(0, fs, size=frac.shape)
    if rng.random() < 0.25 * level:
        f[rng.integers(len(z))] = rng.random(3)
    return new.matrix, list(z), f


def csp_like(rng, lat, z, frac):
    """A sample as a CSP model writes it: the target's atom order, lattice parameters with
    log-normal length and Gaussian angle errors, von Mises fractional noise (one kappa per
    crystal), sometimes one or two sites anywhere, coordinates wrapped, float32 values."""
    a, b, c, al, be, ga = Lattice(lat).parameters
    while True:  # redraw the (rare) angle triples that describe no cell
        lengths = np.array([a, b, c]) * np.exp(rng.normal(0, rng.choice([0.01, 0.03, 0.06, 0.1, 0.2]), 3))
        angles = np.clip(np.array([al, be, ga]) + rng.normal(0, rng.choice([0.5, 2, 5, 10, 20]), 3), 50, 130)
        new = Lattice.from_parameters(*lengths, *angles).matrix
        if np.all(np.isfinite(new)) and abs(np.linalg.det(new)) > 0.2 * np.prod(lengths):
            break
    f = frac + rng.vonmises(0, rng.choice([5, 20, 50, 100, 300, 1000, 5000]), frac.shape) / (2 * np.pi)
    if rng.random() < 0.3:
        for _ in range(rng.integers(0, 3)):
            f[rng.integers(len(z))] = rng.random(3)
    return f32(new, list(z), f % 1.0)


def f32(lat, z, frac):
    return np.asarray(lat, dtype=np.float32).astype(float), z, np.asarray(frac, dtype=np.float32).astype(float)


def overlapping(rng, lat, z, frac):
    """Site 0 moved to 0.1-0.45 Å from another site: structurally invalid under CDVAE's 0.5 Å
    rule, which the matcher itself does not look at."""
    lat, z, frac = coord_noise(rng, lat, z, frac, 0.05)
    frac = frac.copy()
    j = rng.integers(1, len(z))
    d = rng.normal(size=3)
    d *= rng.uniform(0.1, 0.45) / np.linalg.norm(d)
    frac[0] = (frac[j] @ lat + d) @ np.linalg.inv(lat)
    return lat, z, frac


def min_distance(s):
    m = s.distance_matrix
    return float(np.min(m[np.triu_indices(len(s), 1)])) if len(s) > 1 else float("inf")


def single_species(lat, z, frac, element=14):
    return lat, [element] * len(z), frac


def main():
    t0 = time.time()
    rng = np.random.default_rng(SEED)
    pyrng = random.Random(SEED)
    test = load("test")
    val = load("val")
    everything = test + val
    print(f"loaded {len(everything)} crystals ({time.time() - t0:.1f} s)", file=sys.stderr)
    base = [test[i] for i in pyrng.sample(range(len(test)), 200)]

    pairs = []  # (kind, s1 packed, s2 packed)

    def add(kind, s1parts, s2parts, source):
        pairs.append({"kind": kind, "source": source, "s1": pack(*s1parts), "s2": pack(*s2parts)})

    k = 0

    def nxt():
        nonlocal k
        item = base[k % len(base)]
        k += 1
        return item[0], parts(item[1])

    # 1. exact copies: permuted sites + translation; another basis of the same lattice
    for _ in range(20):
        src, p = nxt()
        add("self_permuted", translated(rng, *permuted(rng, *p)), p, src)
    for i in range(25):
        src, p = nxt()
        q = rebased(rng, *p, negative_ok=(i % 5 == 4))
        add("self_rebased", permuted(rng, *coord_noise(rng, *q, 0.02)), p, src)
    # 2. coordinate noise x lattice strain
    for sigma in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45):
        for eps in (0.0, 0.02, 0.05, 0.1):
            for _ in range(5):
                src, p = nxt()
                q = permuted(rng, *coord_noise(rng, *strained(rng, *p, eps), sigma))
                add(f"self_noise", q, p, src)
    # 3. isotropic rescaling (scale=True makes it a perfect match) with a little noise
    for f in (0.7, 0.85, 1.2, 1.5):
        for _ in range(4):
            src, p = nxt()
            add("self_rescaled", coord_noise(rng, *rescaled(rng, *p, f), 0.05), p, src)
    # 4. two species swapped (with a little noise)
    for i in range(50):
        src, p = nxt()
        q = swapped(rng, *p)
        if i % 2:
            q = coord_noise(rng, *q, 0.05)
        add("swap_species", permuted(rng, *q), p, src)
    # 5. polymorphs: other crystals of the same composition
    by_comp = {}
    for name, s in everything:
        by_comp.setdefault(tuple(sorted(site.specie.Z for site in s)), []).append((name, s))
    groups = [g for g in by_comp.values() if len(g) >= 2]
    pyrng.shuffle(groups)
    for g in groups[:90]:
        (n1, a1), (n2, a2) = pyrng.sample(g, 2)
        add("polymorph", parts(a1), parts(a2), f"{n1}|{n2}")
    # 6. different crystals (composition differs)
    for _ in range(12):
        (n1, a1), (n2, a2) = pyrng.sample(everything, 2)
        add("different", parts(a1), parts(a2), f"{n1}|{n2}")
    # 7. generated-like heavy perturbations
    for level in range(4):
        for _ in range(60):
            src, p = nxt()
            add(f"generated", permuted(rng, *generated(rng, *p, level)), p, src)
    # 8. CSP-sample-like predictions (atom order kept, float32), the roles reversed (the
    # reference is the distorted one), and two samples of one target against each other
    for _ in range(120):
        src, p = nxt()
        add("csp_like", csp_like(rng, *p), f32(*p), src)
    for i in range(60):
        src, p = nxt()
        q = csp_like(rng, *p) if i % 2 else permuted(rng, *generated(rng, *p, i % 4))
        add("reversed", p, q, src)
    for i in range(60):
        src, p = nxt()
        add("sample_vs_sample", csp_like(rng, *p), csp_like(rng, *p) if i % 2 else generated(rng, *p, i % 4), src)
    # 9. structurally invalid predictions (two sites closer than 0.5 Å)
    for _ in range(40):
        src, p = nxt()
        add("overlapping", permuted(rng, *overlapping(rng, *p)), p, src)
    # 10. single-species controls (the issue: these already agreed)
    for i in range(30):
        src, p = nxt()
        p1 = single_species(*p)
        q = generated(rng, *p1, i % 4) if i % 2 else coord_noise(rng, *p1, 0.1)
        add("single_species", permuted(rng, *q), p1, src)

    sm = StructureMatcher(**MATCHER)
    t1 = time.time()
    out_pairs = []
    counts = {}
    for i, pr in enumerate(pairs):
        s1, s2 = unpack(pr["s1"]), unpack(pr["s2"])
        r = sm.get_rms_dist(s1, s2)
        rec = {"id": i, "kind": pr["kind"], "source": pr["source"], "s1": pr["s1"], "s2": pr["s2"],
               "s1_min_distance": round(min_distance(s1), 6),
               "match": r is not None, "rms": None if r is None else float(r[0]),
               "max_dist": None if r is None else float(r[1])}
        out_pairs.append(rec)
        c = counts.setdefault(pr["kind"], [0, 0])
        c[0] += 1
        c[1] += rec["match"]
    print(f"{len(out_pairs)} pairs matched by pymatgen in {time.time() - t1:.1f} s", file=sys.stderr)
    for kind, (n, m) in counts.items():
        print(f"  {kind:16s} {m:4d} / {n:4d} match", file=sys.stderr)
    doc = {
        "description": "pymatgen StructureMatcher.get_rms_dist(s1, s2) on fixed pairs of perov-5-based crystals; "
                       "written by make_matcher_fixture.py (seeded). s1 = prediction, s2 = reference; s1_min_distance: smallest periodic distance between two sites of s1 (Angstrom; the matcher ignores it, CDVAE's structural validity needs >= 0.5). Lattice: 3x3 row-major, rows are the lattice "
                       "vectors (Angstrom); frac: n x 3 row-major fractional coordinates; z: atomic numbers.",
        "pymatgen_version": pymatgen.core.__version__,
        "numpy_version": np.__version__,
        "seed": SEED,
        "matcher": MATCHER,
        "pairs": out_pairs,
    }
    with open(OUT, "w") as f:
        f.write("{\n")
        keys = [k for k in doc if k != "pairs"]
        for key in keys:
            f.write(f"  {json.dumps(key)}: {json.dumps(doc[key])},\n")
        f.write('  "pairs": [\n')
        for i, rec in enumerate(out_pairs):
            f.write("    " + json.dumps(rec, separators=(",", ":")) + ("," if i + 1 < len(out_pairs) else "") + "\n")
        f.write("  ]\n}\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {time.time() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
