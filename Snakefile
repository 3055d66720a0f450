# implicit-rmt: sweeps of (n, d, seed) measuring how far the kernels of implicit
# networks are from their random-matrix equivalents. Run through
# `implicit-rmt sweep`, or `snakemake --workflow-profile workflow/profiles/local`.
from snakemake.utils import min_version, validate

from implicit_rmt.config import validate_config

min_version("9.0")


configfile: "config/config.yaml"


# Schema (defaults filled, unknown keys rejected) and semantic checks, before any
# job is planned; a bad config stops here with the key path in the message.
# validate_config returns a checked copy; Snakemake's own validate then fills
# the same schema's defaults into the global `config` as well.
CONFIG = validate_config(config)
validate(config, "config/schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/point.smk"
include: "workflow/rules/aggregate.smk"


# Every point's metrics.json is listed too, so a point that failed is run again
# even where tables from the partial sweep already exist.
rule all:
    input:
        point_metrics(CONFIG["sweep"]),
        convergence_outputs(CONFIG["sweep"]),
    default_target: True
