# Evaluation of each model on the test split, and the comparison report.


rule evaluate:
    input:
        unpack(get_evaluation_inputs),
    output:
        metrics=f"{RESULTS}/eval/{{model}}/metrics.json",
        predictions=f"{RESULTS}/eval/{{model}}/predictions.csv",
        roc_points=f"{RESULTS}/eval/{{model}}/roc.csv",
        roc=report(
            f"{RESULTS}/eval/{{model}}/roc.png",
            caption="../report/roc.rst",
            category="Evaluation",
            subcategory="{model}",
        ),
        samples=report(
            f"{RESULTS}/eval/{{model}}/samples.png",
            caption="../report/samples.rst",
            category="Evaluation",
            subcategory="{model}",
        ),
    log:
        "logs/evaluate/{model}.log",
    benchmark:
        "logs/benchmarks/evaluate/{model}.tsv"
    wildcard_constraints:
        model="|".join(ALL_MODELS),
    conda:
        get_evaluation_env
    threads: get_evaluation_threads
    resources:
        mem_mb=6000,
    params:
        code=get_evaluation_code,
        threshold=get_evaluation_threshold,
    script:
        "../scripts/evaluate.py"


rule postprocess:
    input:
        unpack(get_postprocess_inputs),
    output:
        settings=f"{RESULTS}/models/unet/postprocess.json",
        sweep=f"{RESULTS}/models/unet/postprocess_sweep.csv",
    log:
        "logs/postprocess.log",
    benchmark:
        "logs/benchmarks/postprocess.tsv"
    conda:
        "../envs/tensorflow.yaml"
    resources:
        mem_mb=4000,
    params:
        code=get_code("postprocess.py", "tensorflow"),
        gate_with=get_gate_classifier(),
    script:
        "../scripts/postprocess.py"


rule report:
    input:
        unpack(get_report_inputs),
    output:
        html=report(
            f"{RESULTS}/report/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    conda:
        "../envs/report.yaml"
    params:
        code=get_code("report.py", "report"),
        models=enabled_models(),
        skipped=skipped_models(),
        config=get_result_config(),
    script:
        "../scripts/report.py"


rule submission:
    input:
        unpack(get_submission_gate),
        model=model_file("unet"),
        postprocess=f"{RESULTS}/models/unet/postprocess.json",
        images=get_test_dicoms,
    output:
        submission=f"{RESULTS}/submission.csv",
    log:
        "logs/submission.log",
    benchmark:
        "logs/benchmarks/submission.tsv"
    conda:
        "../envs/tensorflow.yaml"
    resources:
        mem_mb=6000,
    params:
        code=get_code("submission.py", "tensorflow"),
        image_dir=get_test_image_dir(),
        gate_with=get_gate_classifier(),
    script:
        "../scripts/submission.py"
