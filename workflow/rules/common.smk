"""Config validation, the study config the CLI reads, paths, per-rule config slices.

Each job runs one `detnas` command (`detnas()` below) with `--config STUDY_CONFIG`: the validated
config as Snakemake sees it (config/config.yaml, or a --configfile, plus --config overrides),
resolved (every key, data roots filled in) and written to `<results>/config.yaml` once per run,
by the `onstart` handler (workflow/rules/tracking.smk): under the working directory's lock, after
the DAG is planned. A dry run, an invocation the lock refuses, and the jobs a cluster executor
spawns (which parse this file again) write nothing, so a running study's jobs read the config it
started with. That file is not an input of any rule, so editing the config reruns only the rules
whose `params.cfg` (their slice of the resolved config) changed, through Snakemake's params
trigger.

The config is checked twice from the one definition, detnas/plan/config.py's dataclasses: against the
JSON schema generated from them (`json_schema()`, in memory: no schema file to fall out of date),
then by the loader itself (`detnas.plan.config.from_data`: types, data roots, the cross-field checks,
the settings a stage would refuse hours later: docs/config-checks.md), then the input files
there already (`detnas.plan.preflight.check_workflow`). `snakemake -n` refuses a bad one in one line.

The rows of the study (`detnas.plan.study`: the paper's, and those the config's `ablations` adds) make
the rules' wildcards, inputs and settings: a rule runs for each row of its kind (its wildcard's
values), with what the row's record says. Rule names and shell commands are those of the rules
before the rows were declared: a changed command would rerun every job of a finished study
(Snakemake's code trigger).
"""

import copy
import json
import os

import jsonschema
from snakemake.exceptions import WorkflowError

from detnas.plan import config as detnas_config
from detnas.plan import typed
from detnas.plan import layout, preflight, study
from detnas.run import warm

# A --configfile is a whole study: it replaces config/config.yaml instead of being merged into it
# (merging would add the default's synthetic dataset to e.g. config/coco.yaml's datasets).
# --config key=value overrides still apply on top of whichever file is used.
if workflow.overwrite_configfiles:
    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))

CONFIG_FILES = ", ".join(map(str, workflow.overwrite_configfiles or workflow.configfiles))


def _source(field):
    """Where the value of config field ``field`` (dotted) came from: a --config override, else
    the config file(s)."""
    if not field:
        return f"config {CONFIG_FILES}"
    node = workflow.config_settings.config
    for key in field.split("."):
        if not hasattr(node, "keys"):
            break  # the override set the whole value above this key
        if key not in node:
            return f"config {CONFIG_FILES}"
        node = node[key]
    return f"--config {field.split('.')[0]}"


def _validate(data):
    """Validate against the JSON schema generated from detnas/plan/config.py's dataclasses; on error,
    one line naming the file (or the --config override), the key and the value."""
    validator = jsonschema.Draft202012Validator(detnas_config.json_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = ".".join(map(str, error.absolute_path))
        raise WorkflowError(f"{_source(where)}: {where or '(top level)'}: {error.message}")


_validate(config)

try:  # cross-field checks, the data roots, the resolved values (dataclass defaults filled in);
    # then the input files there already (annotations, class folders, a latency table)
    STUDY = detnas_config.from_data(config, "config", generated=True)
    preflight.check_workflow(STUDY, "config")
except ValueError as e:
    field = str(e).split(": ", 1)[0].removeprefix("config").removeprefix(".")
    raise WorkflowError(f"{_source(field)}: {e}") from None
RESOLVED = typed.to_dict(STUDY)
R = STUDY.results


def rpath(*parts):
    """A path of detnas/plan/layout.py (relative to the results folder) in this study's results."""
    return os.path.join(R, *parts)


# Used in the shell commands directly, not as a param or input: its path and content must not
# trigger reruns (the rules' params.cfg slices do that, precisely).
STUDY_CONFIG = rpath(layout.CONFIG)


def start_warm_server():
    """A local run's warm server (detnas/run/warm.py): torch, torchvision, MLflow and detnas imported
    once, and each job's `detnas` a fork of it instead of a fresh process (5 to 7 s of imports a
    job). Called by the `onstart` handler; the server ends with this Snakemake process. Not for
    jobs on cluster nodes, nor where DETNAS_WARM=off."""
    if not workflow.local_exec or os.environ.get(warm.ADDRESS_VARIABLE) == "off":
        return
    server = warm.start("logs/warm.log", os.getpid())
    if server is not None:
        os.environ[warm.ADDRESS_VARIABLE] = server[0]  # the jobs' environment


def write_study_config():
    """Write the resolved config (every key, data roots filled in) for the CLI, atomically;
    untouched when unchanged. Called by the `onstart` handler only: under the lock, once per run.
    """
    detnas_config.write_resolved(
        STUDY, STUDY_CONFIG, "written by workflow/rules/common.smk: the config of this results "
        "folder")

DATASETS = list(STUDY.datasets)
SYNTHETIC = [d for d in DATASETS if STUDY.datasets[d].kind == "synthetic"]
DETECTORS = list(STUDY.detectors)
# The rows of the study, and those of each kind the rules loop over (detnas/plan/study.py).
ROWS = study.rows(STUDY)
BASELINES = [r for r in ROWS if r.kind == "baseline"]
SHARED = [r for r in ROWS if r.shared]  # one architecture and classifier for the whole study
CELL_SEARCHES = [r for r in ROWS if r.cell_search]  # one search per dataset and detector
(CLS_SEARCH,) = [r for r in ROWS if r.kind == "searched" and r.shared]  # ClsNASNet
(NATS,) = [r for r in ROWS if r.kind == "nats"]


def study_row(name):
    """The study's row ``name`` (a wildcard's value)."""
    return study.row(STUDY, name)


# The parent run must exist before the jobs start; ancient: a new parent run (e.g. another
# experiment name) does not make the finished stages out of date.
TRACKING = [ancient(rpath(layout.TRACKING))] if STUDY.tracking.enabled else []

def _alt(names):
    """A wildcard's alternatives: names, or rows (their names)."""
    return "|".join(getattr(n, "name", n) for n in names)


wildcard_constraints:
    dataset=_alt(DATASETS),
    detector=_alt(DETECTORS),
    row=_alt(ROWS),
    init=_alt(study.DETECTION_SUPERNETS),
    rep=r"[1-9]\d*",  # a replicate after the first (layout.replicate_dir)


def _get(dotted):
    value = RESOLVED
    for k in dotted.split("."):
        value = value[k]
    return value


def part(*keys, dataset=None, overrides=None):
    """The slice of the resolved config a rule depends on, as a canonical string (params.cfg).

    Keys may be dotted (``nats.depth``); ``dataset`` adds that dataset's section, ``overrides``
    a row's own settings (only where it has any). Every slice holds ``cpu_isa``: the numerics of
    every stage depend on it.
    """
    data = {k: _get(k) for k in ("cpu_isa", *keys)}
    if dataset is not None:
        data["dataset"] = RESOLVED["datasets"][dataset]
    if overrides:
        data["overrides"] = overrides
    return json.dumps(data, sort_keys=True)


def dataset_cfg(wildcards):
    return part("seed", dataset=wildcards.dataset)


def train_images(wildcards):
    d = STUDY.datasets[wildcards.dataset]
    return f"{d.root}/{d.train_images}"


def train_annotations(wildcards):
    d = STUDY.datasets[wildcards.dataset]
    return f"{d.root}/{d.train_annotations}"


def test_annotations(wildcards):
    d = STUDY.datasets[wildcards.dataset]
    return f"{d.root}/{d.test_annotations}"


CLS_TRAIN = f"{STUDY.classification.root}/train"
CLS_VAL = f"{STUDY.classification.root}/val"
# The classification supernet the fine-tuning and the ClsNASNet search start from: the study's own
# (rule supernet_classification), or a published one (config supernet_from.classification,
# docs/published-supernet.md): no rule makes that one, so the DAG has no pre-training job; a newer
# one (`dvc update`) reruns what starts from it.
CLS_SUPERNET = STUDY.supernet_from.classification or rpath(
    layout.classification_supernet_dir(), layout.CHECKPOINT)


def split(name):
    return rpath(layout.split_file(name))


def arch_json(row, dataset="{dataset}", detector="{detector}", rep=None):
    """Where the architecture of a row of the results table comes from (replicate ``rep``: its
    search seed's winner, NATS's replicate)."""
    kind = study_row(row).kind
    run = STUDY.search_replicate(int(rep or 0)) if kind == "searched" else rep
    return rpath(layout.arch_json(row, dataset, detector, run))


def classifier_dir(row, dataset="{dataset}", detector="{detector}", rep=None):
    """The ImageNet-style retraining of a row (NATS reuses ResNet-50's), of replicate ``rep``."""
    return rpath(layout.classifier_dir(row, dataset, detector, rep))


def row_arch(wildcards):
    """Input function: the arch.json of the job's row (and replicate)."""
    w = wildcards
    return arch_json(w.row, w.get("dataset"), w.get("detector"), w.get("rep"))


def row_classifier(wildcards):
    """Input function: the retrained classifier the job's row (and replicate) starts detection
    training from."""
    w = wildcards
    folder = classifier_dir(w.row, w.get("dataset"), w.get("detector"), w.get("rep"))
    return f"{folder}/{layout.CHECKPOINT}"


def replicate(wildcards):
    """params.rep: the job's replicate (`detnas.plan.config.StudyConfig.replicate`), for the
    command's --set."""
    return f" --set replicate={wildcards.rep}"


def search_cfg(w):
    """params.cfg of a row's search: its settings, and the row's own (`detnas.plan.study.Row`
    overrides, which the command applies by the row's name)."""
    overrides = dict(study_row(w.ablation).overrides)
    return part("seed", "space", "detector", "search", dataset=w.dataset, overrides=overrides)


def supernet_init(wildcards):
    """Input function: the classification supernet a pre-trained detection supernet starts from."""
    return [CLS_SUPERNET] if study.SUPERNETS[wildcards.init].init == "cls" else []


def out_dir(wildcards, output):
    """params.out: the folder of the rule's first output."""
    return os.path.dirname(output[0])


# What the report reads (detnas/plan/layout.py `outputs`: the one list the report's collector and
# scripts/collect_metrics.py read too), by kind; the supernets for their cost.
OUTPUTS = layout.outputs(STUDY)


def study_outputs(kind, shared=None):
    """The study's outputs of ``kind``: of the whole study (``shared``) or per dataset and
    detector. Row by row (each row's cells and replicates in order): the order of the report's
    inputs, in which Snakemake numbers the jobs."""
    found = [o for o in OUTPUTS if o.kind == kind
             and (shared is None or shared == (not o.dataset))]
    order = {r.name: i for i, r in enumerate(ROWS)}
    return [rpath(o.path) for o in sorted(found, key=lambda o: order.get(o.row, -1))]


# Every GPU rule's command goes through `detnas launch`, which decides once, per command, how the
# job's GPUs are used (detnas/run/launch.py): training and the NATS search as DDP processes through
# torchrun (several nodes: srun + a torchrun rendezvous), the DetNAS searches as one process with
# one evaluation worker per GPU. resources.gpu (GPUs of the job in all) and resources.nodes come
# from the profile (profiles/slurm); 0 GPUs runs the plain command.
LAUNCH = "OMP_NUM_THREADS={threads} detnas launch --gpus {resources.gpu} --nodes {resources.nodes} --"


def detnas(command, args="", launch=False, omp=False):
    """The shell command of a job: `detnas COMMAND --config <STUDY_CONFIG> ARGS`, its output into
    the job's log; `launch` (the GPU stages): through LAUNCH; `omp`: with the job's threads as
    OMP threads (LAUNCH sets them too).

    The study config's path is written in here, not as `{STUDY_CONFIG}` in the rules: it is the
    same for every job and must not trigger reruns (the rules' params.cfg do, precisely).
    """
    if launch:
        prefix = f"{LAUNCH} "
    else:
        prefix = "OMP_NUM_THREADS={threads} detnas " if omp else "detnas "
    return f"{prefix}{command} --config {STUDY_CONFIG} {args} > {{log}} 2>&1"
