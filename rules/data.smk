# Data stages: synthetic sample, manifest, dicom_to_jpg, masks, arrays, qc.


rule synthetic_sample:
    output:
        labels=f"{SYNTH_DIR}/stage_2_train_labels.csv",
        classes=f"{SYNTH_DIR}/stage_2_detailed_class_info.csv",
        train=directory(f"{SYNTH_DIR}/stage_2_train_images"),
        test=directory(f"{SYNTH_DIR}/stage_2_test_images"),
    log:
        "logs/synthetic_sample.log",
    benchmark:
        "logs/benchmarks/synthetic_sample.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("synthetic_sample.py", "preprocess"),
        n=config["data"]["synthetic"]["n_images"],
        seed=config["data"]["synthetic"]["seed"],
        size=config["data"]["synthetic"]["image_size"],
    script:
        "../scripts/synthetic_sample.py"


# The manifest is a checkpoint, and so are the shard jobs: after each, Snakemake
# re-evaluates what is left to do, and a downstream job whose inputs were rewritten
# with the same content (its recorded checksums) does not run. So a changed image
# reruns its shard only (README, Reruns).


# One rule for every data source: its reader (pneumoflow.sources.readers) is picked by the
# `source` param; get_manifest_inputs gives the files that source reads.
checkpoint manifest:
    input:
        unpack(get_manifest_inputs),
    output:
        manifest=f"{RESULTS}/manifest.tsv",
        boxes=f"{RESULTS}/boxes.tsv",
        rejected=f"{RESULTS}/qc/manifest_rejected.tsv",
        # each shard's rows (and each shard x split's): what the shard jobs read
        shards=expand(f"{RESULTS}/manifest/{{shard}}.tsv", shard=SHARDS),
        shard_boxes=expand(f"{RESULTS}/boxes/{{shard}}.tsv", shard=SHARDS),
        splits=expand(
            f"{RESULTS}/manifest/{{shard}}.{{split}}.tsv",
            shard=SHARDS,
            split=SPLITS,
        ),
    log:
        "logs/manifest/manifest.log",
        # kept when the rule fails on too many refusals (outputs are removed then)
        rejected_log="logs/manifest/rejected.tsv",
    benchmark:
        "logs/benchmarks/manifest.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("manifest.py", "preprocess"),
        images=get_image_listing,
        source=config["data"]["source"],
        data_dir=get_data_dir(),
        source_settings=get_source_settings(),
        n_shards=N_SHARDS,
        max_rejected_fraction=config["qc"]["max_rejected_fraction"],
    script:
        "../scripts/manifest.py"


checkpoint dicom_to_jpg:
    input:
        manifest=f"{RESULTS}/manifest/{{shard}}.tsv",
        dicoms=get_generated_images,
    output:
        jpg=directory(f"{RESULTS}/jpg/{{shard}}"),
        rejected=f"{RESULTS}/qc/dicom_to_jpg/{{shard}}.tsv",
        # per split: sha256 of each JPG (or its refusal), what the arrays jobs watch
        index=expand(f"{RESULTS}/index/jpg/{{{{shard}}}}.{{split}}.tsv", split=SPLITS),
    log:
        "logs/dicom_to_jpg/{shard}.log",
    benchmark:
        "logs/benchmarks/dicom_to_jpg/{shard}.tsv"
    # the shard jobs before any arrays job: each arrays job waits on its shard's two, and a
    # shard left to the end leaves one core idle (README, Performance: full-size
    # preprocessing under 90 s)
    priority: 2
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("dicom_to_jpg.py", "preprocess"),
        images=get_image_listing,
        source=config["data"]["source"],
        data_dir=get_data_dir(),
    script:
        "../scripts/dicom_to_jpg.py"


checkpoint masks:
    input:
        manifest=f"{RESULTS}/manifest/{{shard}}.tsv",
        boxes=f"{RESULTS}/boxes/{{shard}}.tsv",
    output:
        masks=directory(f"{RESULTS}/masks/{{shard}}"),
        index=expand(f"{RESULTS}/index/masks/{{{{shard}}}}.{{split}}.tsv", split=SPLITS),
    log:
        "logs/masks/{shard}.log",
    benchmark:
        "logs/benchmarks/masks/{shard}.tsv"
    priority: 2
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("masks.py", "preprocess"),
    script:
        "../scripts/masks.py"


rule arrays:
    input:
        manifest=f"{RESULTS}/manifest/{{shard}}.{{split}}.tsv",
        jpg_index=f"{RESULTS}/index/jpg/{{shard}}.{{split}}.tsv",
        mask_index=f"{RESULTS}/index/masks/{{shard}}.{{split}}.tsv",
        # read, but whether they changed for this split is their index's to say
        jpg=ancient(rules.dicom_to_jpg.output.jpg),
        refused=ancient(rules.dicom_to_jpg.output.rejected),
        masks=ancient(rules.masks.output.masks),
    output:
        npz=f"{RESULTS}/arrays/{{size}}px/{{split}}/{{shard}}.npz",
    log:
        "logs/arrays/{size}px/{split}/{shard}.log",
    benchmark:
        "logs/benchmarks/arrays/{size}px/{split}/{shard}.tsv"
    # the training split's jobs (most of the images: 70% by default) first, the small ones
    # fill in at the end
    priority: lambda wildcards: 1 if wildcards.split == "train" else 0
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("arrays.py", "preprocess"),
    script:
        "../scripts/arrays.py"


rule qc_rejected:
    input:
        manifest=rules.manifest.output.rejected,
        shards=expand(f"{RESULTS}/qc/dicom_to_jpg/{{shard}}.tsv", shard=SHARDS),
    output:
        rejected=f"{RESULTS}/qc/rejected.tsv",
    log:
        "logs/qc_rejected.log",
    benchmark:
        "logs/benchmarks/qc_rejected.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("qc_rejected.py", "preprocess"),
    script:
        "../scripts/qc_rejected.py"
