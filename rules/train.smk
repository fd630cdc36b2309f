# Training stages. The classifiers share one rule body and one training module.


for model in CLASSIFIERS:

    rule:
        name:
            f"train_{model}"
        input:
            manifest=rules.manifest.output.manifest,
            train=get_arrays(model, "train"),
            val=get_arrays(model, "val"),
            weights=get_weights(model),
        output:
            model=f"{RESULTS}/models/{model}/model.pt",
            history=f"{RESULTS}/models/{model}/history.csv",
            curves=report(
                f"{RESULTS}/models/{model}/curves.png",
                caption="../report/curves.rst",
                category="Training",
                subcategory=model,
            ),
            val_predictions=f"{RESULTS}/models/{model}/val_predictions.csv",
            run_id=f"{RESULTS}/models/{model}/mlflow_run_id.txt",
        log:
            f"logs/train_{model}.log",
        benchmark:
            f"logs/benchmarks/train_{model}.tsv"
        conda:
            "../envs/torch.yaml"
        threads: config["models"][model]["threads"]
        resources:
            gpu=config["models"][model]["gpus"],
            mem_mb=8000,
        params:
            code=get_code("train_classifier.py", "torch"),
            arch=model,
            settings=get_training_settings(model),
            split_seed=config["split"]["seed"],
            data_source=config["data"]["source"],
            # outside the outputs, which Snakemake deletes before a rerun
            checkpoint=f"{RESULTS}/checkpoints/{model}/last.pt",
        script:
            "../scripts/train_classifier.py"


rule train_unet:
    input:
        manifest=rules.manifest.output.manifest,
        train=get_arrays("unet", "train"),
        val=get_arrays("unet", "val"),
    output:
        model=f"{RESULTS}/models/unet/model.keras",
        history=f"{RESULTS}/models/unet/history.csv",
        loss=report(
            f"{RESULTS}/models/unet/loss.png",
            caption="../report/curves.rst",
            category="Training",
            subcategory="unet",
        ),
        dice=report(
            f"{RESULTS}/models/unet/dice.png",
            caption="../report/curves.rst",
            category="Training",
            subcategory="unet",
        ),
        run_id=f"{RESULTS}/models/unet/mlflow_run_id.txt",
    log:
        "logs/train_unet.log",
    benchmark:
        "logs/benchmarks/train_unet.tsv"
    # the longest chain (train, postprocess, evaluate, submission): start it first, and let the
    # classifiers' shorter jobs fill the other cores (above every arrays job, rules/data.smk)
    priority: 3
    conda:
        "../envs/tensorflow.yaml"
    threads: config["models"]["unet"]["threads"]
    resources:
        gpu=config["models"]["unet"]["gpus"],
        mem_mb=6000,
    params:
        code=get_code("train_unet.py", "tensorflow"),
        settings=get_training_settings("unet"),
        split_seed=config["split"]["seed"],
        data_source=config["data"]["source"],
        backup_dir=f"{RESULTS}/checkpoints/unet",
    script:
        "../scripts/train_unet.py"


rule train_baseline:
    input:
        manifest=rules.manifest.output.manifest,
        train=get_arrays("baseline", "train"),
        val=get_arrays("baseline", "val"),
    output:
        model=f"{RESULTS}/models/baseline/model.json",
        val_predictions=f"{RESULTS}/models/baseline/val_predictions.csv",
        run_id=f"{RESULTS}/models/baseline/mlflow_run_id.txt",
    log:
        "logs/train_baseline.log",
    benchmark:
        "logs/benchmarks/train_baseline.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=2000,
    params:
        code=get_code("train_baseline.py", "torch"),
        settings=get_training_settings("baseline"),
        split_seed=config["split"]["seed"],
        data_source=config["data"]["source"],
    script:
        "../scripts/train_baseline.py"
