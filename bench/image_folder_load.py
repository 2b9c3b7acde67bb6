#!/usr/bin/python3
"""Memory and time of standard.image_folder on a large folder: writes N small RGB PNGs (10 class
folders), runs a one-step pipeline on them and on a 100-image folder, and reports each process's
peak RSS (from the OS, wait4) and wall time. The domain keeps one 8-bit [N, 3, H, W] store, so the
peak should grow by about N*3*H*W bytes over the small run, not by the 4x of a float copy.

  /usr/bin/python3 bench/image_folder_load.py [--images 100000] [--size 16]
Writes bench/results/image_folder_load.json (and prints it) and regenerates the table between
the image_folder_load markers of docs/standard.md; --table-only regenerates the table from the
committed JSON without measuring.
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
from PIL import Image

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--images", type=int, default=100000)
ap.add_argument("--size", type=int, default=16)
ap.add_argument("--flowkit", default=os.path.join(root, "build", "bin", "flowkit"))
ap.add_argument("--table-only", action="store_true")
args = ap.parse_args()
RESULT = os.path.join(root, "bench", "results", "image_folder_load.json")
DOC = os.path.join(root, "docs", "standard.md")
BEGIN, END = "<!-- image_folder_load: bench/image_folder_load.py -->", "<!-- end image_folder_load -->"


def update_docs(r):
    rows = [
        "| images | store (uint8) | a float copy | peak RSS, 100 images | peak RSS, %s images | growth | wall time |" % f"{r['images']:,}",
        "|---:|---:|---:|---:|---:|---:|---:|",
        "| %s of %dx%d RGB | %.1f MB | %.1f MB | %.1f MB | %.1f MB | **%.1f MB** | %.2f s (100 images: %.2f s) |" % (
            f"{r['images']:,}", r["size"], r["size"], r["store_mb"], r["float_copy_mb"], r["small_run"]["peak_rss_mb"],
            r["large_run"]["peak_rss_mb"], r["peak_rss_growth_mb"], r["large_run"]["seconds"], r["small_run"]["seconds"]),
    ]
    text = open(DOC).read()
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    open(DOC, "w").write(text[:a] + "\n" + "\n".join(rows) + "\n" + text[b:])


if args.table_only:
    update_docs(json.load(open(RESULT)))
    raise SystemExit(0)


def write_folder(folder, n, size, rng):
    y, x = np.mgrid[0:size, 0:size] / size
    for c in range(10):
        os.makedirs(os.path.join(folder, str(c)), exist_ok=True)
    for i in range(n):
        f = rng.random(3) * 6
        img = np.stack([np.sin(f[0] * x + i), np.cos(f[1] * y), np.sin(f[2] * (x + y))], -1)
        Image.fromarray(((img + 1) * 127.5).astype(np.uint8)).save(os.path.join(folder, str(i % 10), "%06d.png" % i))


def run(folder, work, name):
    pipeline = {
        "name": name,
        "domain": {"type": "standard.image_folder", "folder": folder, "size": [args.size, args.size], "channels": 3},
        "path": {"type": "standard.affine"},
        "model": {"type": "standard.mlp", "hidden": 16, "layers": 1},
        "loss": {"type": "standard.cfm"},
        "solver": {"type": "standard.euler", "steps": 2},
        "train": {"steps": 1, "batch_size": 16, "checkpoint_every": 0, "log_every": 1},
        "sample": {"count": 10},
        "eval": {"reference_count": 10, "metrics": ["mean_error"]},
    }
    p = os.path.join(work, name + ".json")
    with open(p, "w") as f:
        json.dump(pipeline, f)
    start = time.time()
    proc = subprocess.Popen([args.flowkit, "-q", "run", p, "--runs-dir", os.path.join(work, "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(out.decode())
    return {"seconds": round(time.time() - start, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


work = tempfile.mkdtemp(prefix="flowkit_imgbench_")
try:
    rng = np.random.default_rng(0)
    t = time.time()
    write_folder(os.path.join(work, "big"), args.images, args.size, rng)
    write_seconds = time.time() - t
    write_folder(os.path.join(work, "small"), 100, args.size, rng)
    small = run(os.path.join(work, "small"), work, "small")
    big = run(os.path.join(work, "big"), work, "big")
    store = args.images * 3 * args.size * args.size
    result = {
        "images": args.images, "size": args.size, "png_write_seconds": round(write_seconds, 1),
        "store_mb": round(store / 2**20, 1), "float_copy_mb": round(4 * store / 2**20, 1),
        "small_run": small, "large_run": big,
        "peak_rss_growth_mb": round(big["peak_rss_mb"] - small["peak_rss_mb"], 1),
    }
    os.makedirs(os.path.join(root, "bench", "results"), exist_ok=True)
    with open(RESULT, "w") as f:
        json.dump(result, f, indent=1)
    update_docs(result)
    print(json.dumps(result, indent=1))
finally:
    shutil.rmtree(work, ignore_errors=True)
