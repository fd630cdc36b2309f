"""arrays: JPEG decode at reduced size (libjpeg's DCT-domain scaling) vs full decode + resize.

    .venv/bin/python benchmarks/bench_arrays.py [--n 100] [--size 256]

Both end with the arrays stage's area resize to size x size; the reduced path first
decodes at 1/2, 1/4 or 1/8 scale, as large as still leaves at least 2x the target.
Reports images/s and the pixel difference to the full-decode result.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from common import WORK, report, sample, timed

from pneumoflow.formats.arrays import decode_resized, resize_image
from pneumoflow.sources.rsna import convert_shard


def full_decode(paths, size):
    return [resize_image(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), size) for p in paths]


def reduced_decode(paths, size):
    return [decode_resized(p, size, shape=(1024, 1024)) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="images (1024 x 1024 JPGs from dicom_to_jpg)")
    parser.add_argument("--size", type=int, nargs="+", default=[224, 256, 128])
    args = parser.parse_args()
    folder = sample(args.n)
    manifest = WORK / "manifest-arrays.tsv"
    ids = [p.stem for p in sorted((folder / "stage_2_train_images").glob("*.dcm"))]
    manifest.write_text("patientId\tshard\n" + "".join(f"{i}\t0\n" for i in ids))
    jpg_dir = WORK / "arrays-jpg"
    convert_shard(manifest, 0, folder / "stage_2_train_images", jpg_dir, WORK / "arrays-rejected.tsv")
    paths = sorted(jpg_dir.glob("*.jpg"))
    rows = []
    for size in args.size:
        full = timed(lambda size=size: full_decode(paths, size))
        reduced = timed(lambda size=size: reduced_decode(paths, size))
        diff = np.abs(
            np.stack(full_decode(paths, size)).astype(int) - np.stack(reduced_decode(paths, size)).astype(int)
        )
        rows.append(
            {
                "size": size,
                "full decode img/s": len(paths) / full,
                "reduced decode img/s": len(paths) / reduced,
                "speed-up": full / reduced,
                "max |diff|": int(diff.max()),
                "mean |diff|": float(diff.mean()),
                "pixels off by > 2": f"{(diff > 2).mean():.3%}",
            }
        )
    report("arrays", rows, {"images": f"{len(paths)} 1024x1024 JPGs (dicom_to_jpg output), grayscale"})


if __name__ == "__main__":
    main()
