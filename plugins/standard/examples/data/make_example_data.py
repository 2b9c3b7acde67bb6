#!/usr/bin/python3
"""Writes the user-data examples' files (seeded, so a rerun gives the same bytes):

  mixture5d.npy, mixture5d_labels.npy  a 5-D Gaussian mixture in its own units (float64 [2000, 5]
                                       and int64 [2000]), 4 labelled clusters whose features differ
                                       in scale by 100x: what a user's tabular data looks like
  digit_images/<class>/<n>.png|.jpg    50 digits a class from ../../data/digits.csv.gz, upscaled
                                       8x8 -> 16x16 (bilinear), gray; every fifth one a JPEG

Run: /usr/bin/python3 plugins/standard/examples/data/make_example_data.py
"""
import gzip
import os
import shutil

import numpy as np
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20261204)

# --- a 5-D mixture in user units -------------------------------------------------------------
n, k = 2000, 4
labels = rng.integers(0, k, n)
centres = rng.normal(size=(k, 5)) * 3
scales = np.array([1.0, 10.0, 100.0, 0.1, 1.0])  # each feature in its own unit
x = (centres[labels] + rng.normal(size=(n, 5)) * (0.3 + 0.2 * labels[:, None])) * scales + np.array([0, 50, -300, 2, 0])
np.save(os.path.join(here, "mixture5d.npy"), x.astype(np.float64))
np.save(os.path.join(here, "mixture5d_labels.npy"), labels.astype(np.int64))

# --- a folder of digit images -----------------------------------------------------------------
rows = np.loadtxt(gzip.open(os.path.join(here, "..", "..", "data", "digits.csv.gz")), delimiter=",", dtype=np.int64)
out = os.path.join(here, "digit_images")
shutil.rmtree(out, ignore_errors=True)
for c in range(10):
    os.makedirs(os.path.join(out, str(c)))
    picked = rows[rows[:, 64] == c][:50]
    for i, r in enumerate(picked):
        img = Image.fromarray((r[:64].reshape(8, 8) * 255 // 16).astype(np.uint8), mode="L").resize((16, 16), Image.BILINEAR)
        name = os.path.join(out, str(c), "%03d" % i)
        if i % 5 == 4:
            img.save(name + ".jpg", quality=95)
        else:
            img.save(name + ".png", optimize=True)
print("wrote", here)

# --- the conformance suite's samples of the two user-data domains (plugin.json "example") -----
conf = os.path.join(here, "..", "..", "data", "examples")
shutil.rmtree(conf, ignore_errors=True)
os.makedirs(conf)
with open(os.path.join(conf, "points.csv"), "w") as f:
    f.write("x,y,label\n")
    for i in range(60):
        c = i % 2
        f.write("%.4f,%.4f,%d\n" % (rng.normal() + 3 * c, rng.normal() * 0.5, c))
for c in ("a", "b"):
    os.makedirs(os.path.join(conf, "images", c))
    for i in range(8):
        a = (rng.random((8, 8, 3)) * 128 + (100 if c == "b" else 0)).astype(np.uint8)
        Image.fromarray(a).save(os.path.join(conf, "images", c, "%d.png" % i))
