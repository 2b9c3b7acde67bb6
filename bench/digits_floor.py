#!/usr/bin/python3
"""Energy distance between 500 training digits and the 297 held-out digits (3 draws):
the value a perfect generator would reach on the quickstart's eval, for comparison.
Run with Debian's python (numpy): /usr/bin/python3 bench/digits_floor.py"""
import gzip
import os

import numpy as np

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data = np.loadtxt(gzip.open(os.path.join(root, "plugins/standard/data/digits.csv.gz")), delimiter=",")
x = data[:, :64] / 8 - 1
train, test = x[:1500], x[1500:]


def energy_distance(a, b):  # unbiased form, as the standard plugin computes it
    def mean_within(z):
        d = np.linalg.norm(z[:, None] - z[None], axis=2)
        return d.sum() / (len(z) * (len(z) - 1))
    return 2 * np.linalg.norm(a[:, None] - b[None], axis=2).mean() - mean_within(a) - mean_within(b)


rng = np.random.default_rng(0)
values = [energy_distance(train[rng.choice(1500, 500, replace=False)], test) for _ in range(3)]
print("energy distance, 500 real training digits vs held-out:", " ".join(f"{v:.3f}" for v in values),
      f"(median {np.median(values):.3f})")
