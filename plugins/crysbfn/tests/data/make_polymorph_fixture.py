#!/usr/bin/python3
"""Writes perov5_polymorphs_pymatgen.json: pymatgen's verdict on perov-5's polymorph pairs.

Run once with Debian's Python (python3-pymatgen 2022.11.7):

    /usr/bin/python3 plugins/crysbfn/tests/data/make_polymorph_fixture.py

The pairs are those of CrysMatcher.Perov5PolymorphsAndDistinctCrystals: the test crystals
grouped by sorted atomic numbers, each group in file order, every consecutive pair (a, a+1).
For each, StructureMatcher (the settings of make_matcher_fixture.MATCHER).get_rms_dist(a, a+1)
is recorded: row indices into test.csv.gz, match, rms.
"""
import json
import os
import sys
import time

from make_matcher_fixture import HERE, MATCHER, load
from pymatgen.analysis.structure_matcher import StructureMatcher
import pymatgen.core

OUT = os.path.join(HERE, "perov5_polymorphs_pymatgen.json")


def main():
    t0 = time.time()
    crystals = load("test")
    groups = {}
    for i, (_, s) in enumerate(crystals):
        groups.setdefault(tuple(sorted(site.specie.Z for site in s)), []).append(i)
    sm = StructureMatcher(**MATCHER)
    pairs = []
    for idx in groups.values():
        for a, b in zip(idx, idx[1:]):
            r = sm.get_rms_dist(crystals[a][1], crystals[b][1])
            pairs.append({"a": a, "b": b, "match": r is not None, "rms": None if r is None else round(float(r[0]), 10)})
    pairs.sort(key=lambda p: (p["a"], p["b"]))
    doc = {"description": "pymatgen StructureMatcher.get_rms_dist(test[a], test[b]) for every consecutive pair of "
                          "same-composition perov-5 test crystals; written by make_polymorph_fixture.py",
           "pymatgen_version": pymatgen.core.__version__, "matcher": MATCHER, "pairs": pairs}
    with open(OUT, "w") as f:
        f.write("{\n")
        for key in [k for k in doc if k != "pairs"]:
            f.write(f"  {json.dumps(key)}: {json.dumps(doc[key])},\n")
        f.write('  "pairs": [\n')
        f.write(",\n".join("    " + json.dumps(p, separators=(",", ":")) for p in pairs))
        f.write("\n  ]\n}\n")
    print(f"{len(pairs)} pairs, {sum(p['match'] for p in pairs)} matched by pymatgen; wrote {OUT} "
          f"({time.time() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
