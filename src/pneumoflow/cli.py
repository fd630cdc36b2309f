"""Command line: every stage callable without Snakemake, `python -m pneumoflow STAGE ...`."""

from __future__ import annotations

import argparse
import logging
import sys

from pneumoflow import __version__
from pneumoflow.core import schema


def _setting(path: str, convert=str):
    """An argparse type: the text converted, then checked against the config schema at `path`
    (the default comes from there too: one home for both)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid here ({exc})") from exc
        import jsonschema

        try:
            jsonschema.validate(value, {**schema.definition(path), "$defs": schema.schema()["$defs"]})
        except jsonschema.ValidationError as exc:
            raise argparse.ArgumentTypeError(
                f"{exc.message} (config {path} in {schema.SCHEMA_FILE.name})"
            ) from exc
        return value

    return parse


def _int_or_auto(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _synth(args: argparse.Namespace) -> None:
    from pneumoflow.sources.synthetic import generate

    generate(args.out_dir, n=args.n, seed=args.seed, size=args.size, n_test=args.n_test)


def _manifest(args: argparse.Namespace) -> None:
    from pneumoflow.core.ids import auto_shard_count, is_plain_id
    from pneumoflow.sources.rsna import list_dicoms, run_manifest

    out = args.out_dir
    shards = args.shards
    if shards == "auto":
        count = sum(is_plain_id(pid) for pid in list_dicoms(args.dicom_dir))  # as the Snakefile counts
        shards = auto_shard_count(min(count, args.max_images) if args.max_images else count)
    run_manifest(
        args.labels,
        args.classes,
        args.dicom_dir,
        manifest_out=f"{out}/manifest.tsv",
        boxes_out=f"{out}/boxes.tsv",
        rejected_out=f"{out}/qc/manifest_rejected.tsv",
        rejected_log=f"{out}/qc/manifest_rejected.tsv",
        max_rejected_fraction=args.max_rejected_fraction,
        n_shards=shards,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        max_images=args.max_images,
    )


def _dicom_to_jpg(args: argparse.Namespace) -> None:
    from pneumoflow.sources.rsna import convert_shard

    convert_shard(args.manifest, args.shard, args.dicom_dir, args.out_dir, args.rejected)


def _masks(args: argparse.Namespace) -> None:
    from pneumoflow.formats.masks import masks_shard

    masks_shard(args.manifest, args.boxes, args.shard, args.out_dir)


def _arrays(args: argparse.Namespace) -> None:
    from pneumoflow.formats.arrays import build_arrays

    build_arrays(
        args.manifest, args.split, args.shard, args.size, args.jpg_dir, args.mask_dir, args.refused, args.out
    )


def _score(args: argparse.Namespace) -> None:
    from pneumoflow.stages.submission import score_submission

    score, n = score_submission(args.submission, args.labels)
    print(f"RSNA score {score:.4f} over {n} images")


def _predict(args: argparse.Namespace) -> None:
    from pneumoflow.predict import run_predict

    table = run_predict(args.images, args.models, args.out, args.overlays)
    print(f"{len(table)} images -> {args.out}")


def _ui(args: argparse.Namespace) -> None:
    from pneumoflow.tracking.settings import TrackingSettings
    from pneumoflow.tracking.ui import serve

    raise SystemExit(serve(args.tracking_uri or TrackingSettings().uri, args.experiment, args.port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumoflow", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic RSNA-format sample")
    p.add_argument("out_dir")
    p.add_argument(
        "--n",
        type=_setting("data.synthetic.n_images", int),
        default=schema.default("data.synthetic.n_images"),
        help="training images (default %(default)s)",
    )
    p.add_argument(
        "--seed", type=_setting("data.synthetic.seed", int), default=schema.default("data.synthetic.seed")
    )
    p.add_argument(
        "--size",
        type=_setting("data.synthetic.image_size", int),
        default=schema.default("data.synthetic.image_size"),
        help="image side in pixels (default %(default)s)",
    )
    p.add_argument("--n-test", type=int, default=None, help="stage_2_test_images count (default n/20, >= 3)")
    p.set_defaults(func=_synth)

    p = sub.add_parser("manifest", help="labels + DICOM headers -> manifest.tsv, boxes.tsv, qc")
    p.add_argument("labels", help="stage_2_train_labels.csv")
    p.add_argument("classes", help="stage_2_detailed_class_info.csv")
    p.add_argument("dicom_dir", help="folder of <patientId>.dcm")
    p.add_argument("--out-dir", default="results")
    p.add_argument(
        "--shards",
        type=_setting("preprocess.shards", _int_or_auto),
        default=schema.default("preprocess.shards"),
        help="a number or auto (default %(default)s)",
    )
    p.add_argument(
        "--val-fraction",
        type=_setting("split.val_fraction", float),
        default=schema.default("split.val_fraction"),
    )
    p.add_argument(
        "--test-fraction",
        type=_setting("split.test_fraction", float),
        default=schema.default("split.test_fraction"),
    )
    p.add_argument("--seed", type=_setting("split.seed", int), default=schema.default("split.seed"))
    p.add_argument(
        "--max-images", type=_setting("data.max_images", int), default=schema.default("data.max_images")
    )
    p.add_argument(
        "--max-rejected-fraction",
        type=_setting("qc.max_rejected_fraction", float),
        default=schema.default("qc.max_rejected_fraction"),
    )
    p.set_defaults(func=_manifest)

    p = sub.add_parser("dicom-to-jpg", help="one shard of DICOMs -> JPGs")
    p.add_argument("manifest")
    p.add_argument("shard", type=int)
    p.add_argument("dicom_dir")
    p.add_argument("out_dir")
    p.add_argument("--rejected", required=True, help="TSV of refused files")
    p.set_defaults(func=_dicom_to_jpg)

    p = sub.add_parser("masks", help="one shard of boxes -> PNG masks")
    p.add_argument("manifest")
    p.add_argument("boxes")
    p.add_argument("shard", type=int)
    p.add_argument("out_dir")
    p.set_defaults(func=_masks)

    p = sub.add_parser("arrays", help="one split x shard -> resized .npz")
    p.add_argument("manifest")
    p.add_argument("split", choices=["train", "val", "test"])
    p.add_argument("shard", type=int)
    p.add_argument("size", type=int)
    p.add_argument("jpg_dir")
    p.add_argument("mask_dir")
    p.add_argument("refused", help="dicom_to_jpg's TSV of refused files")
    p.add_argument("out", help="output .npz")
    p.set_defaults(func=_arrays)

    p = sub.add_parser("predict", help="trained models on new DICOM/JPG/PNG images -> predictions.csv")
    p.add_argument("images", nargs="+", help="image files or folders of them")
    p.add_argument(
        "--models",
        default="results/models",
        help="folder of the trained models, or a registered one: models:/pneumoflow-vgg16@current "
        "(from MLFLOW_TRACKING_URI, default sqlite:///results/mlflow.db)",
    )
    p.add_argument("--out", default="predictions.csv", help="CSV, one row per image")
    p.add_argument("--overlays", default=None, help="folder for one PNG per image with boxes drawn")
    p.set_defaults(func=_predict)

    p = sub.add_parser("ui", help="the MLflow UI on the project's store, opened on the model runs")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="store to open (default: MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db)",
    )
    p.add_argument(
        "--experiment",
        default=schema.default("mlflow.experiment"),
        help="experiment to open (mlflow.experiment)",
    )
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    p.set_defaults(func=_ui)

    p = sub.add_parser("score", help="RSNA competition score of a Kaggle-format submission")
    p.add_argument(
        "--submission", required=True, help="CSV of patientId,PredictionString ('conf x y w h ...')"
    )
    p.add_argument("--labels", required=True, help="stage_2_train_labels.csv")
    p.set_defaults(func=_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except (ValueError, OSError, RuntimeError) as exc:
        logging.getLogger("pneumoflow").error("%s", exc)
        return 1
    return 0
