# Setup and small lookup functions shared by all rules.
import hashlib
import time
from functools import cache
from pathlib import Path

from pneumoflow.core import codeclosure, provenance, schema
from pneumoflow.core.canonical import canonical
from pneumoflow.models.catalog import CLASSIFIERS, imagenet_name, weights_file
from pneumoflow.core.ids import auto_shard_count, shard_name, shard_of
from pneumoflow.core.jobenv import export_src_path
from pneumoflow.core.split import SPLITS
from pneumoflow.sources.readers import reader
from pneumoflow.sources.rsna_layout import CLASSES_CSV, LABELS_CSV, TEST_DIR, TRAIN_DIR
from pneumoflow.tracking.client import end_parent_run, start_parent_run
from pneumoflow.tracking.settings import TrackingSettings, export_settings

export_src_path()
provenance.export(workflow.basedir, config)
# MLflow settings reach the jobs through the environment, not as params: where runs are
# logged does not change a result, so switching them reruns nothing.
export_settings(config["mlflow"])

RESULTS = "results"
# Generated input data, like a download: kept apart from the derived results/.
SYNTH_DIR = "data/synthetic"


wildcard_constraints:
    shard=r"\d{2}",
    split="|".join(SPLITS),
    size=r"\d+",


def get_data_dir():
    """Folder in the RSNA layout that the manifest reads."""
    source = config["data"]["source"]
    if source == "synthetic":
        return SYNTH_DIR
    if source == "rsna":
        return config["data"]["rsna_dir"]
    if source == "imagefolder":
        return config["data"]["imagefolder_dir"]
    raise ValueError(
        f"expected data.source synthetic, rsna or imagefolder, got {source!r}"
    )


IMAGEFOLDER = config["data"]["source"] == "imagefolder"
if IMAGEFOLDER and not config["data"]["imagefolder_dir"]:
    raise ValueError(
        "data.source is imagefolder but data.imagefolder_dir is not set; point it at a folder "
        "train|val|test/<CLASS>/<image> (e.g. Kermany's chest_xray)"
    )


def get_train_image_dir():
    return f"{get_data_dir()}/{TRAIN_DIR}"


def get_test_image_dir():
    return f"{get_data_dir()}/{TEST_DIR}"


def has_test_images():
    """The synthetic sample always has a test folder; an RSNA download when it was unpacked."""
    return (
        config["data"]["source"] == "synthetic" or Path(get_test_image_dir()).is_dir()
    )


def get_test_dicoms(wildcards):
    """stage_2_test_images as submission inputs (its folder for the not yet generated sample)."""
    if config["data"]["source"] == "synthetic":
        return get_test_image_dir()
    return sorted(str(p) for p in Path(get_test_image_dir()).glob("*.dcm"))


@cache
def _list_inputs():
    """(id, entry with .stat()) of every candidate input image of the data source."""
    return reader(config["data"]["source"]).list_inputs(get_data_dir())


def get_manifest_inputs(wildcards):
    """The files the manifest reads beyond its images (watched through params.images): the
    RSNA layout's two CSVs; for the generated sample, its image folder too."""
    if IMAGEFOLDER:
        return {}
    return {
        "labels": f"{get_data_dir()}/{LABELS_CSV}",
        "classes": f"{get_data_dir()}/{CLASSES_CSV}",
        "dicoms": get_generated_images(wildcards),
    }


def get_source_settings():
    """The config values the source's manifest reads, as canonical JSON."""
    return canonical(reader(config["data"]["source"]).source_settings(config))


def count_images():
    """How many images the manifest will consider: the sample's size or the input files
    listed, at most data.max_images."""
    if config["data"]["source"] == "synthetic":
        n = config["data"]["synthetic"]["n_images"]
    else:
        n = len(_list_inputs())
    max_images = config["data"]["max_images"]
    return min(n, max_images) if max_images else n


def get_shard_count():
    """preprocess.shards, with auto resolved from the image count (ids.auto_shard_count)."""
    shards = config["preprocess"]["shards"]
    return auto_shard_count(count_images()) if shards == "auto" else shards


N_SHARDS = get_shard_count()
SHARDS = [shard_name(i) for i in range(N_SHARDS)]


@cache
def _listing_by_shard():
    """{shard label: sha256 of the sorted (id, size, mtime) of its input images}."""
    rows = {s: [] for s in SHARDS}
    for pid, entry in _list_inputs():
        stat = entry.stat()
        rows[shard_name(shard_of(pid, N_SHARDS))].append(
            f"{pid}\t{stat.st_size}\t{stat.st_mtime_ns}"
        )
    return {
        s: hashlib.sha256("\n".join(sorted(r)).encode()).hexdigest()
        for s, r in rows.items()
    }


def get_image_listing(wildcards):
    """A param that changes when an input image of the job is added, removed or rewritten:
    the digest of its shard's listing (every shard's without a shard wildcard).

    A param, not the 26,684 files as inputs: Snakemake's DAG work grows with the
    number of input files (a no-op rerun took 28 s at full size), a param costs one
    stat per file. The generated sample is covered by its folder (get_generated_images).
    """
    if config["data"]["source"] == "synthetic":
        return "generated"
    by_shard = _listing_by_shard()
    if "shard" in wildcards.keys():
        return by_shard[wildcards.shard]
    return canonical(by_shard)


def get_generated_images(wildcards):
    """The synthetic sample's image folder (made by rule synthetic_sample), else nothing."""
    if config["data"]["source"] == "synthetic":
        return get_train_image_dir()
    return []


def get_array_sizes():
    """Distinct img_size of the enabled models, e.g. [224, 256]."""
    return sorted({config["models"][m]["img_size"] for m in enabled_models()})


ALL_MODELS = ["unet", *CLASSIFIERS, "baseline"]


def model_names():
    """Every configured model, ALL_MODELS first: the same order whatever the config's."""
    known = [m for m in ALL_MODELS if m in config["models"]]
    return known + sorted(set(config["models"]) - set(ALL_MODELS))


def skipped_models():
    """{model: why it does not run} for the report."""
    skipped = {
        name: f"disabled in config (models.{name}.enabled: false)"
        for name in model_names()
        if not config["models"][name]["enabled"]
    }
    if IMAGEFOLDER and config["models"]["unet"]["enabled"]:
        skipped["unet"] = (
            "data.source is imagefolder: its images carry class labels but no opacity boxes, "
            "so there is nothing to train or test a segmentation model on"
        )
    return skipped


def enabled_models():
    return [name for name in model_names() if name not in skipped_models()]


def get_arrays(model, split):
    """The .npz files of one split at the model's img_size, all shards."""
    size = config["models"][model]["img_size"]
    return expand(f"{RESULTS}/arrays/{size}px/{split}/{{shard}}.npz", shard=SHARDS)


def get_training_settings(model):
    """models.<model> as canonical JSON, without the keys that do not change the result."""
    return canonical(config["models"][model], drop=schema.JOB_KEYS)


def get_code(script, env):
    """Digest of scripts/<script>, every package module it reaches and envs/<env>.yaml: a
    rule's `code` param, so that an edit anywhere in that code or software env reruns the
    rule (Snakemake sees only the script, and the env only under --sdm conda)."""
    base = Path(workflow.basedir)
    return codeclosure.code_digest(
        base / "scripts" / script, extra=(base / "envs" / f"{env}.yaml",)
    )


def get_evaluation_threshold(wildcards):
    """evaluate.threshold, for the U-Net's pixel metrics only: the classifiers use the threshold
    chosen on val and saved with them, so changing it does not rerun their evaluation.
    """
    return config["evaluate"]["threshold"] if wildcards.model == "unet" else None


def get_evaluation_threads(wildcards):
    """The model's threads (1 for the baseline): cores the scheduler books for its evaluation."""
    return config["models"][wildcards.model].get("threads", 1)


def get_evaluation_code(wildcards):
    env = Path(get_evaluation_env(wildcards)).stem
    return get_code("evaluate.py", env)


def get_result_config():
    """The config without what does not change results (mlflow, job resources), as
    canonical JSON: what the report shows."""
    models = {
        # `enabled` stays: the report shows which models were switched off
        name: {
            k: v
            for k, v in section.items()
            if k == "enabled" or k not in schema.JOB_KEYS
        }
        for name, section in config["models"].items()
    }
    return canonical({**config, "models": models}, drop=("mlflow",))


def get_weights(model):
    """The configured weight file as an input ([] without pretrained weights).

    imagenet (or a torchvision enum name) is torchvision's file in torch's hub cache: when it is
    missing, it is downloaded now, before any job starts, as torchvision would; offline, the run
    stops here saying which file, folder and URL.
    """
    weights = config["models"][model]["weights"]
    path = weights_file(model, weights)
    if path is None or not config["models"][model]["enabled"]:
        return []
    if not path.is_file() and imagenet_name(model, weights) is not None:
        from pneumoflow.models.classifiers import (
            ensure_weights,
        )  # torch: only when a download is due

        ensure_weights(model, weights)
    if not path.is_file():
        raise ValueError(
            f"models.{model}.weights={weights!r}: file not found. Set weights: imagenet "
            f"(torchvision's file through torch's hub cache), a torchvision state dict, or null"
        )
    return [str(path)]


MODEL_FILES = {"unet": "model.keras", "baseline": "model.json"}


def model_file(model):
    return f"{RESULTS}/models/{model}/{MODEL_FILES.get(model, 'model.pt')}"


def get_gate_classifier():
    """The classifier whose probability gates the U-Net's boxes (postprocess.gate_with), or
    None when it is off or that classifier is not trained in this run."""
    gate = config["postprocess"]["gate_with"]
    return gate if gate in enabled_models() else None


def get_postprocess_inputs(wildcards):
    inputs = {
        "model": model_file("unet"),
        "run_id": f"{RESULTS}/models/unet/mlflow_run_id.txt",
        "val": get_arrays("unet", "val"),
        "manifest": rules.manifest.output.manifest,
        "boxes": rules.manifest.output.boxes,
    }
    if get_gate_classifier():
        inputs["gate"] = f"{RESULTS}/models/{get_gate_classifier()}/val_predictions.csv"
    return inputs


def get_submission_gate(wildcards):
    gate = get_gate_classifier()
    return {"gate_model": model_file(gate)} if gate else {}


def get_evaluation_inputs(wildcards):
    model = wildcards.model
    inputs = {
        "model_file": model_file(model),
        "run_id": f"{RESULTS}/models/{model}/mlflow_run_id.txt",
        "test": get_arrays(model, "test"),
        "manifest": rules.manifest.output.manifest,
        "boxes": rules.manifest.output.boxes,
    }
    if model == "unet":
        inputs["postprocess"] = f"{RESULTS}/models/unet/postprocess.json"
        if get_gate_classifier():
            gate = get_gate_classifier()
            inputs["gate"] = f"{RESULTS}/eval/{gate}/predictions.csv"
    return inputs


def get_evaluation_env(wildcards):
    return (
        "../envs/tensorflow.yaml" if wildcards.model == "unet" else "../envs/torch.yaml"
    )


def get_report_inputs(wildcards):
    """Per enabled model (in params.models' order): its test metrics, ROC points, MLflow run
    id, and figures (results/.../<model>/*.png, which the report groups by folder)."""
    models = enabled_models()
    figures = []
    for model in models:
        curves = {"unet": ["loss.png", "dice.png"], "baseline": []}.get(
            model, ["curves.png"]
        )
        figures += [f"{RESULTS}/models/{model}/{c}" for c in curves]
        figures.append(f"{RESULTS}/eval/{model}/samples.png")
    return {
        "manifest": rules.manifest.output.manifest,
        "rejected": f"{RESULTS}/qc/rejected.tsv",
        "metrics": [f"{RESULTS}/eval/{m}/metrics.json" for m in models],
        "roc": [f"{RESULTS}/eval/{m}/roc.csv" for m in models],
        "run_ids": [f"{RESULTS}/models/{m}/mlflow_run_id.txt" for m in models],
        "figures": figures,
    }


def get_final_outputs():
    outputs = [f"{RESULTS}/qc/rejected.tsv"]
    outputs += expand(
        f"{RESULTS}/arrays/{{size}}px/{{split}}/{{shard}}.npz",
        size=get_array_sizes(),
        split=SPLITS,
        shard=SHARDS,
    )
    # the models too, not only the report built from them: a deleted results/models must
    # come back (from the MLflow run cache) on the next run
    for model in enabled_models():
        outputs += [model_file(model), f"{RESULTS}/eval/{model}/metrics.json"]
    if enabled_models():
        outputs.append(f"{RESULTS}/report/report.html")
    if "unet" in enabled_models() and has_test_images():
        outputs.append(f"{RESULTS}/submission.csv")
    return outputs


TRACKING = TrackingSettings.from_config(config["mlflow"])
_parent_run = {}


# The rules whose jobs log to MLflow; a run with none of them (preprocessing only) opens no
# store: creating its schema and the parent run cost 3-6 s of a 20 s preprocessing run.
TRACKED_RULES = {"train_unet", "train_baseline", "evaluate", "postprocess"} | {
    f"train_{model}" for model in CLASSIFIERS
}


def start_tracking():
    """Create the MLflow schema once, before jobs log in parallel; open the parent run."""
    # jobs past a checkpoint are in the DAG already, waiting on it, so a full run finds them
    if not any(job.rule.name in TRACKED_RULES for job in workflow.dag.needrun_jobs()):
        return
    tags = {
        "pneumoflow.config_hash": provenance.config_hash(config),
        "pneumoflow.kind": "pipeline",
    }
    run_id = start_parent_run(
        TRACKING, f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}", tags
    )
    _parent_run["id"] = run_id


def end_tracking(ok):
    end_parent_run(TRACKING, _parent_run.get("id"), ok)
