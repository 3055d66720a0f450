# One sweep point: build the kernel store tile by tile, then measure ||K* - K-bar||_2.


rule point:
    output:
        store=directory(f"{RESULTS}/{{sweep}}/points/{POINT}/kernels.zarr"),
        metrics=f"{RESULTS}/{{sweep}}/points/{POINT}/metrics.json",
    log:
        f"{RESULTS}/{{sweep}}/logs/point/{POINT}.log",
    benchmark:
        f"{RESULTS}/{{sweep}}/benchmarks/point/{POINT}.tsv"
    params:
        program=IMPLICIT_RMT,
        options=point_options,
        threads_per_worker=point_threads_per_worker,
    threads: CONFIG["resources"]["point"]["threads"]
    resources:
        mem_mb=point_mem_mb,
        runtime=point_runtime,
        gpu=CONFIG["resources"]["point"]["gpu"],
    conda:
        "../envs/implicit-rmt.yaml"
    shell:
        "{params.program} -v point --n {wildcards.n} --dim {wildcards.d}"
        " --seed {wildcards.seed} {params.options}"
        " --threads-per-worker {params.threads_per_worker}"
        " --out {output.store} --metrics {output.metrics} > {log} 2>&1"
