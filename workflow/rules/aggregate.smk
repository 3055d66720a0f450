# A sweep's manifest (the grid it asks for), then its tables and figures.


rule sweep_manifest:
    output:
        f"{RESULTS}/{{sweep}}/sweep.json",
    log:
        f"{RESULTS}/{{sweep}}/logs/sweep_manifest.log",
    benchmark:
        f"{RESULTS}/{{sweep}}/benchmarks/sweep_manifest.tsv"
    params:
        manifest=lambda wildcards: manifest(wildcards.sweep, sweep_config(wildcards)),
    localrule: True
    run:
        write_manifest(output[0], params.manifest, log[0])


rule aggregate:
    input:
        manifest=f"{RESULTS}/{{sweep}}/sweep.json",
        metrics=lambda wildcards: point_metrics(wildcards.sweep),
    output:
        netcdf=f"{RESULTS}/{{sweep}}/convergence.nc",
        csv=report(
            f"{RESULTS}/{{sweep}}/convergence.csv",
            caption="../report/convergence.rst",
            category="Convergence",
        ),
        markdown=f"{RESULTS}/{{sweep}}/convergence.md",
        plots=report(
            directory(f"{RESULTS}/{{sweep}}/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Figures",
        ),
    log:
        f"{RESULTS}/{{sweep}}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/{{sweep}}/benchmarks/aggregate.tsv"
    threads: CONFIG["resources"]["aggregate"]["threads"]
    resources:
        mem_mb=CONFIG["resources"]["aggregate"]["mem_mb"],
        runtime=CONFIG["resources"]["aggregate"]["runtime"],
    params:
        program=IMPLICIT_RMT,
        sweep_dir=lambda wildcards: f"{RESULTS}/{wildcards.sweep}",
    conda:
        "../envs/implicit-rmt.yaml"
    localrule: True
    shell:
        "{params.program} -v aggregate {params.sweep_dir} > {log} 2>&1"
