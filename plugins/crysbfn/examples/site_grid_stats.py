#!/usr/bin/env python3
"""How many perov-5 fractional coordinates sit on the 0 / 1/2 grid (the docs' Euclidean-ablation
paragraph). Reads the shipped CDVAE CSVs (P1 CIF blocks), writes results/site_grid_stats.json:

    python3 plugins/crysbfn/examples/site_grid_stats.py

A coordinate is "on the grid" when its distance to the nearest of 0, 1/2, 1 (after mod 1) is at
most 1e-3; a crystal is on the grid when all its 15 coordinates are.
"""
import csv
import gzip
import io
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "perov_5")
OUT = os.path.join(HERE, "results", "site_grid_stats.json")
TOL = 1e-3
SITE = re.compile(r"^\s*[A-Z][a-z]?\s+\S+\s+\d+\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+\s*$")


def coordinates(cif):
    out = []
    for line in io.StringIO(cif):
        m = SITE.match(line)
        if m:
            out.append([float(v) % 1.0 for v in m.groups()])
    return out


def off_grid(x):
    return min(abs(x - g) for g in (0.0, 0.5, 1.0))


def main():
    result = {"tolerance": TOL}
    for split in ("val", "test"):
        coords_on = coords = crystals_on = crystals = 0
        with gzip.open(os.path.join(DATA, f"{split}.csv.gz"), "rt") as f:
            for row in csv.DictReader(f):
                sites = coordinates(row["cif"])
                flags = [off_grid(x) <= TOL for site in sites for x in site]
                coords += len(flags)
                coords_on += sum(flags)
                crystals += 1
                crystals_on += all(flags)
        result[split] = {"crystals": crystals, "coordinates": coords,
                         "coordinates_on_grid": coords_on / coords, "crystals_all_on_grid": crystals_on / crystals}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
