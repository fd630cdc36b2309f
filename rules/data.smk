# Data stages: synthetic sample, manifest, dicom_to_jpg, masks, arrays, qc.


rule synthetic_sample:
    output:
        labels=f"{SYNTH_DIR}/stage_2_train_labels.csv",
        classes=f"{SYNTH_DIR}/stage_2_detailed_class_info.csv",
        train=directory(f"{SYNTH_DIR}/stage_2_train_images"),
        test=directory(f"{SYNTH_DIR}/stage_2_test_images"),
    log:
        "logs/synthetic_sample.log",
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("synthetic_sample.py"),
        n=config["data"]["synthetic"]["n_images"],
        seed=config["data"]["synthetic"]["seed"],
        size=config["data"]["synthetic"]["image_size"],
    script:
        "../scripts/synthetic_sample.py"


# The manifest of an ImageFolder tree: split and label from the folders, no boxes.
if IMAGEFOLDER:

    rule manifest:
        input:
            images=get_dicoms,
        output:
            manifest=f"{RESULTS}/manifest.tsv",
            boxes=f"{RESULTS}/boxes.tsv",
            rejected=f"{RESULTS}/qc/manifest_rejected.tsv",
        log:
            main="logs/manifest/manifest.log",
            rejected="logs/manifest/rejected.tsv",
        benchmark:
            "logs/benchmarks/manifest.tsv"
        conda:
            "../envs/preprocess.yaml"
        params:
            code=get_code("imagefolder_manifest.py"),
            root=get_data_dir(),
            classes=canonical(config["data"]["imagefolder_classes"]),
            shards=N_SHARDS,
            max_rejected_fraction=config["qc"]["max_rejected_fraction"],
        script:
            "../scripts/imagefolder_manifest.py"

else:

    rule manifest:
        input:
            labels=f"{get_data_dir()}/stage_2_train_labels.csv",
            classes=f"{get_data_dir()}/stage_2_detailed_class_info.csv",
            dicoms=get_dicoms,
        output:
            manifest=f"{RESULTS}/manifest.tsv",
            boxes=f"{RESULTS}/boxes.tsv",
            rejected=f"{RESULTS}/qc/manifest_rejected.tsv",
        log:
            main="logs/manifest/manifest.log",
            # kept when the rule fails on too many refusals (outputs are removed then)
            rejected="logs/manifest/rejected.tsv",
        benchmark:
            "logs/benchmarks/manifest.tsv"
        conda:
            "../envs/preprocess.yaml"
        params:
            code=get_code("manifest.py"),
            dicom_dir=get_train_image_dir(),
            shards=N_SHARDS,
            val_fraction=config["split"]["val_fraction"],
            test_fraction=config["split"]["test_fraction"],
            split_seed=config["split"]["seed"],
            max_images=config["data"]["max_images"],
            max_rejected_fraction=config["qc"]["max_rejected_fraction"],
        script:
            "../scripts/manifest.py"


rule dicom_to_jpg:
    input:
        manifest=rules.manifest.output.manifest,
        dicoms=get_dicoms,
    output:
        jpg=directory(f"{RESULTS}/jpg/{{shard}}"),
        rejected=f"{RESULTS}/qc/dicom_to_jpg/{{shard}}.tsv",
    log:
        "logs/dicom_to_jpg/{shard}.log",
    benchmark:
        "logs/benchmarks/dicom_to_jpg/{shard}.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("dicom_to_jpg.py"),
        dicom_dir=get_train_image_dir(),
        source=config["data"]["source"],
        root=get_data_dir(),
    script:
        "../scripts/dicom_to_jpg.py"


rule masks:
    input:
        manifest=rules.manifest.output.manifest,
        boxes=rules.manifest.output.boxes,
    output:
        masks=directory(f"{RESULTS}/masks/{{shard}}"),
    log:
        "logs/masks/{shard}.log",
    benchmark:
        "logs/benchmarks/masks/{shard}.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("masks.py"),
    script:
        "../scripts/masks.py"


rule arrays:
    input:
        manifest=rules.manifest.output.manifest,
        jpg=rules.dicom_to_jpg.output.jpg,
        refused=rules.dicom_to_jpg.output.rejected,
        masks=rules.masks.output.masks,
    output:
        npz=f"{RESULTS}/arrays/{{size}}px/{{split}}/{{shard}}.npz",
    log:
        "logs/arrays/{size}px/{split}/{shard}.log",
    benchmark:
        "logs/benchmarks/arrays/{size}px/{split}/{shard}.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("arrays.py"),
    script:
        "../scripts/arrays.py"


rule qc_rejected:
    input:
        manifest=rules.manifest.output.rejected,
        shards=expand(f"{RESULTS}/qc/dicom_to_jpg/{{shard}}.tsv", shard=SHARDS),
    output:
        f"{RESULTS}/qc/rejected.tsv",
    log:
        "logs/qc_rejected.log",
    conda:
        "../envs/preprocess.yaml"
    params:
        code=get_code("qc_rejected.py"),
    script:
        "../scripts/qc_rejected.py"
