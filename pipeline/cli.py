"""``python -m pipeline <command>``: the only place that parses arguments.

Exit codes: 0 done; 1 a named error (printed as one line, no traceback); 2 bad usage;
3 a gate said no (e.g. the dataset is not valid); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence

from pipeline import contracts, prompt
from pipeline.errors import InvalidArgument, PipelineError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_GATE_FAILED = 3
EXIT_INTERRUPTED = 130
DEMO_SAMPLE_PROFILES = 3000


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def _holdout_sample(text: str) -> int:
    """--max-holdout: below the correlation gate's least sample, no run could ever pass."""
    value = _positive_int(text)
    if value < contracts.MIN_HOLDOUT_PROFILES:
        raise argparse.ArgumentTypeError(
            f"expected at least {contracts.MIN_HOLDOUT_PROFILES} (the correlation gate's least sample), got {value}"
        )
    return value


def _share(text: str) -> float:
    from pipeline.scoring import routing

    try:
        return routing.parse_share(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Researcher-scorer training pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="the dataset stage (GenerateDataset, ValidateData)")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)

    sample = dataset_commands.add_parser("sample", help="create the source tables if absent and load synthetic profiles")
    sample.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        required="DATABASE_URL" not in os.environ,
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    sample.add_argument("--profiles", type=_positive_int, default=DEMO_SAMPLE_PROFILES, help="profiles to generate (default %(default)s)")
    sample.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same rows")
    sample.add_argument("--dirty-fraction", type=_fraction, default=None, help="share of damaged teacher answers (default 0.01)")

    export = dataset_commands.add_parser("export", help="export train/validation/holdout JSONL and manifest.json")
    export.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (default: $DATABASE_URL; neither: an embedded PostgreSQL with the sample)",
    )
    export.add_argument("--out", required=True, help="a local directory or s3://bucket/prefix")
    export.add_argument("--min-rows", type=_positive_int, default=None, help="fewest usable rows to accept (default 1000)")
    export.add_argument("--teachers", default=None, help="comma-separated scored_by values (default: the spec's two)")
    export.add_argument("--split", default=None, help="train,validation,holdout fractions (default 0.8,0.1,0.1)")
    export.add_argument(
        "--seed-profiles",
        default=None,
        help="file or s3:// URI with one seed-profile twitter_id per line (required with --database-url; "
        "the embedded sample brings its own)",
    )
    export.add_argument(
        "--no-validate", action="store_true", help="skip the ValidateData check after the export (run `dataset validate` later)"
    )
    export.add_argument("--no-progress", action="store_true", help="no progress bar")

    validate = dataset_commands.add_parser("validate", help="check a written dataset (ValidateData)")
    validate.add_argument("--data", required=True, help="the dataset directory or s3:// prefix")
    validate.add_argument("--min-rows", type=_positive_int, default=None, help="fewest usable rows to accept (default 1000)")

    seeds = dataset_commands.add_parser("seed-profiles", help="print the bundled seed-profile twitter_ids")
    seeds.add_argument("--out", default=None, help="write to this file instead of standard output")

    train = commands.add_parser(
        "train", help="LoRA/QLoRA fine-tuning here (the SageMaker job's code), or one SageMaker job with --sagemaker"
    )
    train.add_argument(
        "--dataset",
        required=True,
        help="directory with train.jsonl and validation.jsonl; with --sagemaker s3://<bucket>/runs/<run>/dataset",
    )
    train.add_argument("--base-model", default=None, help="Hugging Face model directory (with tokenizer.model); not with --sagemaker")
    train.add_argument("--out", default=None, help="where the adapter, tokenizer and training_metrics.json go; not with --sagemaker")
    train.add_argument("--checkpoints", default=None, help="checkpoint directory, resumed from (default: OUT/checkpoints)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a hyperparameter (repeatable), e.g. --set num_train_epochs=1",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    remote = train.add_argument_group("a SageMaker training job from this workstation (requirements/sagemaker-sdk.txt)")
    remote.add_argument("--sagemaker", action="store_true", help="start one job on the stack's image, role and bucket")
    remote.add_argument("--instance-type", default=None, help="a SageMaker GPU training instance (default: the stack's)")
    remote.add_argument(
        "--spot", action=argparse.BooleanOptionalAction, default=None, help="managed spot training (default: the stack's, spot)"
    )
    remote.add_argument("--wait", action="store_true", help="stream the job's logs and metrics until it ends; Ctrl-C asks to stop it")
    remote.add_argument("--stack", default=None, help="the Pulumi stack whose outputs to read (default: the selected stack)")
    remote.add_argument("--role-arn", default=None, help="the SageMaker role (default: the stack's training_role_arn)")
    remote.add_argument("--image-uri", default=None, help="the training image (default: the stack's training_image_uri)")
    remote.add_argument("--bucket", default=None, help="the artifact bucket (default: the stack's artifact_bucket)")
    remote.add_argument("--poll-seconds", type=_positive_float, default=30.0, help="seconds between status checks with --wait")

    convert = commands.add_parser("convert", help="base model + LoRA adapter -> GGUF, streamed (ConvertToGGUF)")
    convert.add_argument("--base-model", required=True, help="Hugging Face model directory: a path or s3://")
    convert.add_argument("--adapter", required=True, help="peft LoRA adapter directory: a path or s3://")
    convert.add_argument("--out", required=True, help="the GGUF file: a path or s3://; <out>.json describes it")
    convert.add_argument("--quant", default="q4_k_m", choices=["q4_k_m", "q8_0", "f16", "f32"], help="default %(default)s")
    convert.add_argument("--threads", type=_positive_int, default=None, help="tensors prepared in parallel (default: cores)")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")

    tiny = commands.add_parser("tiny-model", help="build a tiny Mistral-architecture model with a local tokenizer")
    tiny.add_argument("--out", required=True, help="the model directory to write")
    tiny.add_argument("--layers", type=_positive_int, default=2, help="transformer blocks (default %(default)s)")
    tiny.add_argument(
        "--pretrain", action="store_true", help="pretrain it on sample profiles (no scores), as make demo does: a few minutes"
    )
    stage = commands.add_parser(
        "stage-base-model",
        help="copy a local base model directory to S3 once (the training job's base_model channel, ConvertToGGUF's input)",
    )
    stage.add_argument(
        "--from", dest="source", required=True, help="Hugging Face model directory: config.json, tokenizer.model, *.safetensors"
    )
    stage.add_argument(
        "--to",
        dest="destination",
        required=True,
        help="s3://<bucket>/base-models/Mistral-7B-Instruct-v0.2/ (the stack's base_model_uri output)",
    )
    stage.add_argument("--replace", action="store_true", help="replace a different model staged there")
    stage.add_argument("--no-progress", action="store_true", help="no progress bar")
    modelfile = commands.add_parser("modelfile", help="print the Ollama Modelfile for a GGUF (what DeployModel creates)")
    modelfile.add_argument("--gguf", required=True, help="the GGUF file the Modelfile's FROM names")

    validate_model = commands.add_parser("validate", help="score holdout and seed profiles, apply the gates (ValidateModel)")
    target = validate_model.add_mutually_exclusive_group(required=True)
    target.add_argument("--gguf", help="score with this GGUF in llama.cpp, prompted as Ollama prompts it")
    target.add_argument("--ollama-url", help="score with a model served by Ollama at this URL (needs --model)")
    validate_model.add_argument("--model", help="the Ollama tag to score, e.g. mistral-researcher:<run_id>-<hash>")
    validate_model.add_argument("--holdout", required=True, help="holdout.jsonl (teacher-scored, held out): path or s3://")
    validate_model.add_argument("--seeds", required=True, help="seeds.jsonl (the seed profiles): path or s3://")
    validate_model.add_argument("--out", required=True, help="report directory: report.json, report.md, plots")
    validate_model.add_argument("--concurrency", type=_positive_int, default=1, help="profiles scored at once (default 1)")
    validate_model.add_argument(
        "--max-holdout", type=_holdout_sample, default=None, help="holdout profiles scored at most, a fixed sample (default 500)"
    )
    validate_model.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a threshold, e.g. --gate correlation_min=0.8 (repeatable)",
    )
    validate_model.add_argument("--no-progress", action="store_true", help="no progress bar")
    score = commands.add_parser("score", help="score profiles with the model in production (or a GGUF): what the orchestrator calls")
    backend = score.add_mutually_exclusive_group(required=True)
    backend.add_argument("--ollama-url", help="the Ollama host serving the model, e.g. http://10.0.1.23:11434")
    backend.add_argument("--gguf", help="score with this GGUF in llama.cpp instead, prompted as Ollama prompts it")
    score.add_argument("--model", default=None, help="the Ollama tag (default: the production tag, mistral-researcher:latest)")
    score.add_argument("--in", dest="input", required=True, help="profiles.jsonl: one object per line, the source table's columns")
    score.add_argument("--out", required=True, help="results.jsonl: one result per input line, in order")
    score.add_argument("--pointer", default=None, help="the production pointer (s3://<bucket>/models/current.json) to name the run")
    score.add_argument("--concurrency", type=_positive_int, default=4, help="profiles scored at once (default 4)")
    score.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds per request before it is a timeout (default 60)")
    score.add_argument(
        "--share",
        type=_share,
        default=100.0,
        help="percent of profiles the custom model scores, by a stable hash of twitter_id (customModelShare; default 100)",
    )
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    for name, flag, what in (
        ("promote", "--run", "pin a named run as production (its gates must have passed, or --force)"),
        ("rollback", "--to", "restore a named earlier run as production (its gates must have passed, or --force)"),
    ):
        control = commands.add_parser(name, help=what)
        control.add_argument(flag, dest="target_run", required=True, metavar="RUN", help="the run id")
        control.add_argument("--root", default=".", help="where runs/ lives: a directory or s3://<bucket> (default: .)")
        control.add_argument("--ollama-url", default=None, help="the Ollama host serving production (AWS: the host, via SSM)")
        control.add_argument(
            "--force",
            action="store_true",
            help="also a run that failed its gates or whose GGUF its report cannot vouch for (recorded as forced)",
        )
        control.add_argument("--note", default="", help="why, for the history")
        control.add_argument(
            "--model-name",
            default=None,
            help="the stack's modelName (default: production's, read from the pointer; else mistral-researcher)",
        )
    shadow = commands.add_parser(
        "shadow", help="the production model vs the teachers on profiles scored since its dataset (none trained on): Phase 4's A/B"
    )
    shadow.add_argument("--root", default=".", help="where runs/ and the pointer live: a directory or s3://<bucket> (default: .)")
    shadow.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="PostgreSQL (default: $DATABASE_URL)")
    shadow_backend = shadow.add_mutually_exclusive_group()
    shadow_backend.add_argument("--ollama-url", help="score with the production tag on this Ollama host")
    shadow_backend.add_argument("--gguf", help="score with this GGUF in llama.cpp (default locally: the production GGUF)")
    shadow.add_argument("--model", default=None, help="the Ollama tag (default: the production tag)")
    shadow.add_argument("--since", default=None, help="ISO time (default: when the production run's dataset was exported)")
    shadow.add_argument("--teachers", default=None, help="comma-separated scored_by values (default: the spec's two)")
    shadow.add_argument("--seed-profiles", default=None, help="twitter_ids left out (the seed gates'): a file or s3:// (default: none)")
    shadow.add_argument("--max-profiles", type=_positive_int, default=500, help="newest fresh profiles scored at most (default 500)")
    shadow.add_argument("--drop-alert", type=_fraction, default=0.05, help="alert when Pearson falls more than this (default 0.05)")
    shadow.add_argument("--topic-arn", default=None, help="an SNS topic an alert is published to (the stack's failure_topic_arn)")
    shadow.add_argument("--concurrency", type=_positive_int, default=2, help="profiles scored at once (default 2)")
    shadow.add_argument("--no-progress", action="store_true", help="no progress bar")
    history_parser = commands.add_parser("runs", help="the run history: every run, passed or not, and every operator action")
    history_commands = history_parser.add_subparsers(dest="runs_command", required=True)
    runs_list = history_commands.add_parser("list", help="every run with its outcome, dataset and metrics")
    runs_list.add_argument("--root", default=".", help="where runs/ lives: a directory or s3://<bucket> (default: .)")
    runs_compare = history_commands.add_parser("compare", help="two runs side by side: a table and a plot")
    runs_compare.add_argument("first", help="a run id")
    runs_compare.add_argument("second", help="another run id")
    runs_compare.add_argument("--root", default=".", help="where runs/ lives: a directory or s3://<bucket> (default: .)")
    runs_compare.add_argument("--plot", default=None, help="the plot's PNG (default: compare-FIRST-SECOND.png here)")
    run = commands.add_parser("run", help="the whole pipeline on this machine: dataset -> train -> GGUF -> deploy -> gates -> promote")
    run.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (default: $DATABASE_URL; neither: an embedded PostgreSQL with the sample)",
    )
    run.add_argument(
        "--profiles",
        type=_positive_int,
        default=DEMO_SAMPLE_PROFILES,
        help="sample profiles for the embedded PostgreSQL (default %(default)s)",
    )
    run.add_argument(
        "--seed-profiles", default=None, help="file or s3:// URI with one seed-profile twitter_id per line (required with --database-url)"
    )
    run.add_argument(
        "--base-model",
        default=None,
        help="a local Hugging Face model directory, e.g. Mistral-7B-Instruct-v0.2 (default: the tiny model on CPU)",
    )
    run.add_argument(
        "--ollama-url", default=None, help="deploy, validate, promote and roll back on this Ollama (default: llama.cpp in-process)"
    )
    run.add_argument("--run-id", default=None, help="resume this run (default: a new run id)")
    run.add_argument("--root", default=".", help="where runs/ lives (default: the current directory)")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="training hyperparameter override")
    run.add_argument("--gate", action="append", default=[], metavar="NAME=VALUE", help="quality-gate threshold override")
    run.add_argument("--quant", default="q4_k_m", choices=["q4_k_m", "q8_0", "f16", "f32"], help="default %(default)s")
    run.add_argument("--concurrency", type=_positive_int, default=2, help="profiles scored at once (default 2)")
    run.add_argument("--max-holdout", type=_holdout_sample, default=None, help="holdout profiles scored at most (default 500)")
    run.add_argument("--min-rows", type=_positive_int, default=None, help="fewest usable rows to accept (default 1000)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


@contextlib.contextmanager
def _database_url(url: str | None) -> Iterator[str]:
    from pipeline.local import embedded

    if not url:
        _note(f"no --database-url or DATABASE_URL: starting an embedded PostgreSQL with {DEMO_SAMPLE_PROFILES} sample profiles")
    with embedded.database_url(url, DEMO_SAMPLE_PROFILES) as resolved:
        yield resolved


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _print_validation(result) -> None:
    status = "valid" if result.valid else "NOT valid"
    print(f"dataset {status}: {json.dumps(result.counts)}; class balance {json.dumps(result.class_balance)}")
    for problem in result.problems:
        print(f"  problem {problem['reason']} x{problem['count']}: {'; '.join(problem['examples'])}")
    for warning in result.warnings:
        print(f"  warning: {warning}")


def _dataset_sample(args) -> int:
    from pipeline.dataset import source
    from pipeline.local import sample

    dirty = sample.DEFAULT_DIRTY_FRACTION if args.dirty_fraction is None else args.dirty_fraction
    conn = source.connect(source.ConnectionParams.from_url(args.database_url))
    try:
        profiles, scores = sample.load_sample(conn, args.profiles, args.seed, dirty)
    finally:
        conn.close()
    print(f"loaded {profiles} profiles ({sample.SEED_PROFILE_COUNT} of them seed profiles) and {scores} scores")
    return EXIT_OK


def _dataset_export(args) -> int:
    # The COPY is sent before the export's rules are imported or the seed list read: the server
    # sorts the whole query before its first row (most of a small export's time), and the rest runs
    # meanwhile (docs/benchmarks.md); a seed list refused then stops the COPY with the export. The
    # flags are checked before anything starts (an embedded PostgreSQL takes seconds).
    from pipeline.dataset import source, stream

    teachers = source.parse_teachers(args.teachers) if args.teachers else source.DEFAULT_TEACHERS
    fractions = None
    if args.split:
        from pipeline.dataset import split

        fractions = split.SplitFractions.parse(args.split)
    with _database_url(args.database_url) as url, stream.ExportStream(source.ConnectionParams.from_url(url), teachers) as started:
        from pipeline.dataset import generate, split
        from pipeline.local import sample

        config = generate.ExportConfig(
            teachers=teachers,
            fractions=fractions or split.SplitFractions(),
            seed_ids=sample.seed_ids_for(args.database_url, args.seed_profiles),
            min_rows=args.min_rows or contracts.DEFAULT_MIN_ROWS,
            progress=not args.no_progress,
        )
        manifest = generate.export_dataset(started.params, args.out, config, started)
    counts = manifest["counts"]
    print(
        f"wrote {args.out}: train {counts['train']}, validation {counts['validation']}, holdout {counts['holdout']} "
        f"({counts['seed_profiles_in_holdout']} seed profiles); rejected {counts['rejected']} {json.dumps(manifest['rejects'])}"
    )
    if args.no_validate:
        return EXIT_OK
    from pipeline.dataset import validate

    result = validate.validate_dataset(args.out, config.min_rows)
    _print_validation(result)
    return EXIT_OK if result.valid else EXIT_GATE_FAILED


def _dataset_validate(args) -> int:
    from pipeline.dataset import validate

    result = validate.validate_dataset(args.data, args.min_rows or contracts.DEFAULT_MIN_ROWS)
    _print_validation(result)
    return EXIT_OK if result.valid else EXIT_GATE_FAILED


def _dataset_seed_profiles(args) -> int:
    from pipeline.local import sample

    text = sample.seed_profile_list()
    if args.out:
        from pipeline import storage

        storage.write_bytes(args.out, text.encode("utf-8"))
    else:
        sys.stdout.write(text)
    return EXIT_OK


SAGEMAKER_ONLY = ("instance_type", "spot", "wait", "stack", "role_arn", "image_uri", "bucket")


def _train(args) -> int:
    from pathlib import Path

    from pipeline.training import hyperparameters, trainer

    if args.sagemaker:
        return _train_sagemaker(args)
    given = [f"--{name.replace('_', '-')}" for name in SAGEMAKER_ONLY if getattr(args, name) not in (None, False)]
    if given:
        raise InvalidArgument(f"{', '.join(given)} only go with --sagemaker")
    if not args.base_model or not args.out:
        raise InvalidArgument("training here needs --base-model and --out (or --sagemaker for a SageMaker job)")
    hp = hyperparameters.parse(hyperparameters.parse_assignments(args.set))
    out = Path(args.out)
    paths = trainer.TrainingPaths(
        Path(args.dataset), Path(args.base_model), out, Path(args.checkpoints) if args.checkpoints else out / "checkpoints"
    )
    metrics = trainer.train(paths, hp, progress=not args.no_progress)
    losses = metrics["eval_loss_per_epoch"]
    print(
        f"adapter written to {out} ({metrics['global_steps']} steps, {metrics['seconds']} s, {metrics['precision']}"
        f"{', QLoRA' if metrics['qlora'] else ''}); eval loss per epoch: " + ", ".join(f"{entry['eval_loss']:.4f}" for entry in losses)
    )
    return EXIT_OK


def _train_sagemaker(args) -> int:
    import boto3

    from pipeline.training import adhoc_job, hyperparameters, job_spec

    for flag, value in (("--base-model", args.base_model), ("--out", args.out), ("--checkpoints", args.checkpoints)):
        if value:
            raise InvalidArgument(f"{flag} does not go with --sagemaker: the job reads the stack's base model and writes to its bucket")
    overrides = adhoc_job.Overrides(
        role_arn=args.role_arn,
        image_uri=args.image_uri,
        bucket=args.bucket,
        instance_type=args.instance_type,
        spot=args.spot,
        hyperparameters=hyperparameters.parse_assignments(args.set),
    )
    outputs = None if (args.role_arn and args.image_uri and args.bucket) else adhoc_job.read_stack_outputs(args.stack)
    settings = adhoc_job.resolve_settings(outputs, overrides)
    dataset = adhoc_job.check_dataset(args.dataset, settings)
    session = boto3.Session()
    job = adhoc_job.plan(settings, dataset, region=session.region_name)
    training_job = adhoc_job.start(job, session)
    print(f"started {job.job_name}: {job_spec.describe(job.request)}")
    print(f"  console: {job.console_url}")
    print(f"  logs:    {adhoc_job.LOG_GROUP} {job.job_name}/...")
    if not args.wait:
        print(f"its adapter will be at {job.adapter_uri} once it completes")
        return EXIT_OK
    try:
        followed = adhoc_job.follow(training_job, poll_seconds=args.poll_seconds, progress=not args.no_progress)
    except adhoc_job.LeftRunning as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    adhoc_job.outcome(job, followed)
    metrics = adhoc_job.final_metrics(training_job) or followed.metrics
    figures = ", ".join(f"{name} {value:.4g}" for name, value in sorted(metrics.items()))
    print(f"{job.job_name} completed{': ' + figures if figures else ''}")
    print(f"adapter: {job.adapter_uri}")
    print("next:")
    print(f"  python -m pipeline convert --base-model {settings.base_model_uri} --adapter {job.adapter_uri} --out model.gguf")
    print(
        "  python -m pipeline validate --ollama-url http://<host>:11434 --model <tag> --holdout "
        f"{dataset}/{contracts.HOLDOUT_FILE} --seeds {dataset}/{contracts.SEEDS_FILE} --out report/"
    )
    return EXIT_OK


def _convert(args) -> int:
    from pipeline.gguf import convert, quant

    description = convert.export_gguf(
        args.base_model,
        args.adapter,
        args.out,
        quant.OutputType(args.quant),
        threads=args.threads or convert.DEFAULT_THREADS,
        progress=not args.no_progress,
    )
    print(
        f"wrote {args.out}: {description['size']:,} bytes, sha256 {description['sha256']}, "
        f"{json.dumps(description['tensor_types'])}, {description['seconds']} s"
    )
    return EXIT_OK


def _stage_base_model(args) -> int:
    from pipeline import staging

    result = staging.stage_base_model(args.source, args.destination, replace=args.replace, progress=not args.no_progress)
    size = sum(entry["size"] for entry in result["files"].values())
    print(
        f"staged {len(result['files'])} files ({size:,} bytes) at {result['destination']}: "
        f"{len(result['uploaded'])} uploaded, {len(result['skipped'])} already there; manifest {staging.STAGED_MANIFEST}"
    )
    return EXIT_OK


def _tiny_model(args) -> int:
    from pipeline.local import tiny_model

    build = tiny_model.build_pretrained_tiny_model if args.pretrain else tiny_model.build_tiny_model
    path = build(args.out, layers=args.layers)
    print(f"tiny model written to {path}: {json.dumps(tiny_model.describe(path))}")
    return EXIT_OK


def _modelfile(args) -> int:
    from pipeline.serving import modelfile

    sys.stdout.write(modelfile.render_modelfile(args.gguf))
    return EXIT_OK


def _parse_gates(assignments: list[str]):
    from pipeline.evaluation.gates import QualityGates
    from pipeline.training.hyperparameters import parse_assignments

    return QualityGates.from_mapping(parse_assignments(assignments, flag="--gate"))


def _validate_model(args) -> int:
    from pipeline.evaluation import evaluate
    from pipeline.scoring import scorer
    from pipeline.serving.ollama import OllamaClient

    gates = _parse_gates(args.gate)
    if args.gguf and args.model:
        raise InvalidArgument("--model goes with --ollama-url; with --gguf the file is the model")
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(OllamaClient(args.ollama_url)) if args.ollama_url else None
        backends, backend_name = scorer.backends_for(gguf_path=args.gguf, client=client, model=args.model, concurrency=args.concurrency)
        summary = evaluate.evaluate(
            backends,
            model=args.model or args.gguf,
            backend_name=backend_name,
            holdout_uri=args.holdout,
            seeds_uri=args.seeds,
            out_uri=args.out,
            gates=gates,
            max_holdout=args.max_holdout or evaluate.DEFAULT_MAX_HOLDOUT,
            progress=not args.no_progress,
        )
    metrics = summary["metrics"]
    print(
        f"{'PASSED' if summary['passed'] else 'FAILED'}: seed mean {_or_undefined(metrics['seed_mean'])}, seed min "
        f"{_or_undefined(metrics['seed_min'])}, pearson {_or_undefined(metrics['pearson'])}, p95 latency "
        f"{metrics['latency_p95_s']:.2f} s, valid JSON "
        f"{'undefined' if metrics['valid_json_rate'] is None else format(metrics['valid_json_rate'], '.1%')}, "
        f"request failures {metrics['request_failures']}; report {summary['report_md_uri']}"
    )
    if not summary["passed"]:
        print(f"failed gates: {', '.join(summary['failed_gates'])}", file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_OK


def _score(args) -> int:
    from pipeline import contracts, storage
    from pipeline.scoring import production, scorer
    from pipeline.serving.ollama import OllamaClient, Timeouts

    if args.gguf and args.model:
        raise InvalidArgument("--model goes with --ollama-url; with --gguf the file is the model")
    with storage.open_read(args.input) as lines:
        rows = production.read_rows(lines)
    run_id = None
    if args.pointer:
        pointer = storage.read_json(args.pointer)
        run_id = pointer.get("run_id") if isinstance(pointer, dict) else None
    model = args.gguf or args.model or f"{contracts.MODEL_NAME}:{contracts.PRODUCTION_TAG}"
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(OllamaClient(args.ollama_url, timeouts=Timeouts(request_s=args.timeout))) if args.ollama_url else None
        backends, _ = scorer.backends_for(
            gguf_path=args.gguf, client=client, model=None if args.gguf else model, concurrency=args.concurrency
        )
        results = production.score_profiles(rows, backends, model=model, run_id=run_id, share=args.share, progress=not args.no_progress)
    storage.write_bytes(args.out, "".join(json.dumps(result.to_json(), ensure_ascii=False) + "\n" for result in results).encode())
    summary = production.summarize(results, args.share)
    failed = ", ".join(f"{name} {count}" for name, count in sorted(summary.failed.items())) or "none"
    latency = (
        f"latency p50 {summary.latency_p50_s:.2f} s, p95 {summary.latency_p95_s:.2f} s"
        if summary.latency_p50_s is not None
        else "no request sent"
    )
    share = f"; outside the {summary.share:g} % share (route teacher): {summary.outside_share}" if summary.share < 100 else ""
    print(f"scored {summary.scored} of {summary.profiles}; failed: {failed}{share}; {latency}; results {args.out}")
    invalid = summary.failed.get(production.Failure.INVALID_PROFILE.value, 0)
    if summary.scored == 0 and summary.profiles > invalid + summary.outside_share:
        print("error: no profile was scored (see the failures above)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _or_undefined(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _cell(value) -> str:
    """A value of the history for the terminal: numbers to 3 decimals, text one clean line. The
    history holds untrusted text (teacher names, error causes): no control character (an OSC-8
    link) reaches the terminal, and the consoles that print it parse no markup."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{prompt.clean_text(key)} {_cell(count)}" for key, count in value.items())
    return prompt.clean_text(str(value))


def _serving_config_for(root: str, model_name: str | None = None):
    """The pipeline's pointer in the bucket (models/current.json); the local loop's beside its runs.
    The model's name is the one production has (the stack's modelName, read from the pointer), else
    ``model_name`` (--model-name), else the default; a --model-name that contradicts the pointer is
    refused rather than tags created that production never uses."""
    from pipeline import storage
    from pipeline.local.run import LOCAL_POINTER
    from pipeline.serving import lifecycle

    config = lifecycle.ServingConfig() if storage.is_s3(root) else lifecycle.ServingConfig(pointer_path=LOCAL_POINTER)
    found = lifecycle.config_from_pointer(root, config)
    if model_name is not None:
        if not contracts.MODEL_NAME_PATTERN.fullmatch(model_name):
            raise InvalidArgument(
                f"--model-name must be an Ollama model name (lowercase letters, digits, '.', '_', '-'), got {model_name!r}"
            )
        if found is not config and found.model_name != model_name:
            raise InvalidArgument(f"--model-name {model_name} but production is {found.production} (the stack's modelName)")
        return dataclasses.replace(found, model_name=model_name)
    return found


def _shadow(args) -> int:
    import datetime as dt
    from pathlib import Path

    from pipeline import storage
    from pipeline.dataset import source, split
    from pipeline.evaluation import shadow
    from pipeline.scoring import scorer
    from pipeline.serving import lifecycle
    from pipeline.serving.ollama import OllamaClient

    config = _serving_config_for(args.root)
    pointer = lifecycle.read_pointer(args.root, config)
    if not pointer:
        raise shadow.NoProductionModel(f"no model in production ({lifecycle.pointer_uri(args.root, config)} is absent): nothing to shadow")
    run_id = str(pointer.get("run_id") or "")
    try:
        since = dt.datetime.fromisoformat(args.since) if args.since else shadow.since_of(args.root, run_id)
    except ValueError:
        raise InvalidArgument(f"--since must be an ISO time such as 2026-11-23T03:00:00+00:00, got {args.since!r}") from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    teachers = source.parse_teachers(args.teachers) if args.teachers else source.DEFAULT_TEACHERS
    seed_ids = split.load_seed_ids(args.seed_profiles) if args.seed_profiles else frozenset()
    gguf = args.gguf
    if not args.ollama_url and not gguf:
        gguf = str(pointer.get("production", ""))
        if not Path(gguf).is_file():
            raise InvalidArgument("give --ollama-url (the host serving production) or --gguf FILE")
    model = gguf or args.model or config.production
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_database_url(args.database_url))
        conn = source.connect(source.ConnectionParams.from_url(url))
        stack.callback(conn.close)
        client = stack.enter_context(OllamaClient(args.ollama_url)) if args.ollama_url else None
        backends, _ = scorer.backends_for(gguf_path=gguf, client=client, model=None if gguf else model, concurrency=args.concurrency)
        result, out = shadow.run_shadow(
            args.root,
            conn,
            backends,
            model=model,
            run_id=run_id,
            since=since,
            teachers=teachers,
            seed_ids=seed_ids,
            limit=args.max_profiles,
            drop_alert=args.drop_alert,
            progress=not args.no_progress,
        )

    def fmt(value) -> str:
        return "undefined" if value is None else f"{value:.3f}"

    print(
        f"shadow of {model} (run {run_id}) on {result.profiles} fresh profiles since {result.since}: {result.scored} answered; "
        f"pearson {fmt(result.pearson)}, MAE {fmt(result.mae)}, agreement {fmt(result.agreement)} "
        f"(previous pearson {fmt(result.previous_pearson)}); report {storage.join(out, 'shadow.md')}"
    )
    if result.alert:
        message = f"shadow agreement dropped: pearson {fmt(result.pearson)} after {fmt(result.previous_pearson)} ({model}, run {run_id})"
        print(f"ALERT: {message}", file=sys.stderr)
        if args.topic_arn:
            import boto3

            boto3.client("sns").publish(TopicArn=args.topic_arn, Subject="researcher-scorer shadow agreement dropped", Message=message)
        return EXIT_GATE_FAILED
    return EXIT_OK


def _pin(args) -> int:
    from pipeline import history
    from pipeline.serving import operator
    from pipeline.serving.ollama import OllamaClient

    config = _serving_config_for(args.root, args.model_name)
    kind = history.Kind.PROMOTE if args.command == "promote" else history.Kind.ROLLBACK
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(OllamaClient(args.ollama_url)) if args.ollama_url else None
        result = operator.pin(args.root, args.target_run, kind=kind, client=client, config=config, force=args.force, note=args.note)
    forced = " (forced)" if result["forced"] else ""
    print(f"{args.target_run} is production{forced}: {result['production']}, replacing {result['replaced'] or 'nothing'}")
    print(f"recorded in {history.index_uri(args.root)}")
    return EXIT_OK


def _runs_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline import history

    found = history.read(args.root)
    table = Table(title=f"runs in {history.index_uri(args.root)}")
    table.add_column("run", no_wrap=True)
    for column in ("time", "outcome", "rows", "pearson", "mae", "seed mean/min", "pearson vs production"):
        table.add_column(column)
    for record in found.runs().values():
        validation = record.get("validation") or {}
        metrics = validation.get("metrics") or {}
        champion = validation.get("champion")
        table.add_row(
            _cell(record["run_id"]),
            _cell(record.get("time", "")).replace("+00:00", "Z"),
            _cell(record.get("outcome")) + (f" ({_cell(record['error'])[:60]})" if record.get("error") else ""),
            _cell(history.value_at(record, ("dataset", "rows"))),
            _cell(metrics.get("pearson")),
            _cell(metrics.get("mae")),
            f"{_cell(metrics.get('seed_mean'))}/{_cell(metrics.get('seed_min'))}",
            "nothing in production" if validation and champion is None else _cell((champion or {}).get("pearson_delta")),
        )
    console = Console(markup=False)  # the history's text is never markup
    console.print(table)
    for action in found.actions():
        forced = " (forced)" if action.get("forced") else ""
        when, kind, run, replaced = (_cell(action.get(key)) for key in ("time", "kind", "run_id", "replaced"))
        console.print(f"{when}: {kind} {run}{forced}, replacing {'nothing' if replaced == '-' else replaced}")
    if found.unreadable:
        print(f"warning: {found.unreadable} line(s) of {history.index_uri(args.root)} are not run records", file=sys.stderr)
    if not found.records:
        print(f"no runs recorded in {history.index_uri(args.root)} yet")
    else:
        print("reports: <root>/runs/<run>/report/report.md; teacher mix and training: python -m pipeline runs compare A B")
    return EXIT_OK


def _runs_compare(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline import history, storage

    found = history.read(args.root)
    first, second = history.pick(found, args.first), history.pick(found, args.second)
    table = Table(title=f"{args.first} vs {args.second}")
    for column in ("", args.first, args.second, "difference"):
        table.add_column(column)
    for label, path in history.COMPARED:
        a, b = history.value_at(first, path), history.value_at(second, path)
        x, y = history.as_number(a), history.as_number(b)
        difference = f"{y - x:+.3f}" if x is not None and y is not None and label in history.NUMERIC else ""
        table.add_row(label, _cell(a), _cell(b), difference)
    Console(markup=False).print(table)  # the history's text is never markup
    plot = args.plot or f"compare-{args.first}-{args.second}.png"
    storage.write_bytes(plot, history.compare_plot(first, second))
    print(f"plot: {plot}")
    return EXIT_OK


def _run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline.local import run as local_run
    from pipeline.training import hyperparameters

    console = Console(stderr=True)
    options = local_run.RunOptions(
        root=args.root,
        run_id=args.run_id,
        database_url=args.database_url,
        seed_profiles=args.seed_profiles,
        sample_profiles=args.profiles,
        base_model=args.base_model,
        training_overrides=hyperparameters.parse_assignments(args.set),
        quantization=args.quant,
        ollama_url=args.ollama_url,
        gates=_parse_gates(args.gate),
        concurrency=args.concurrency,
        max_holdout=args.max_holdout,
        min_rows=args.min_rows,
        progress=not args.no_progress,
    )
    started = time.monotonic()

    def on_stage(name: str, index: int) -> None:
        elapsed = time.monotonic() - started
        console.rule(f"[bold]stage {index + 1}/{len(local_run.STAGES)}: {name}[/] ({elapsed:.0f} s elapsed)")

    result = local_run.run(options, note=lambda message: console.print(f"  {message}"), on_stage=on_stage)
    summary = result.summary
    table = Table(title=f"run {result.run_id}: {summary['outcome']}")
    for column in ("gate", "value", "threshold", "result"):
        table.add_column(column)
    for gate in summary["validation"]["gates"]:
        # A gate decided without a value says why (nothing in production yet, too few profiles).
        value = gate["detail"] if gate["value"] is None and gate.get("detail") else _or_undefined(gate["value"])
        table.add_row(gate["name"], value, f"{gate['comparison']} {gate['threshold']}", "pass" if gate["passed"] else "FAIL")
    console.print(table)
    if summary.get("shadow"):
        shadowed = summary["shadow"]
        console.print(
            f"shadow of the production model on {shadowed['profiles']} fresh profiles: pearson {_or_undefined(shadowed['pearson'])}, "
            f"agreement {_or_undefined(shadowed['agreement'])}{' — ALERT: agreement dropped' if shadowed['alert'] else ''}; "
            f"{shadowed['report']}"
        )
    training = summary["training"]
    console.print(
        f"training loss {_or_undefined(training['first_loss'])} -> {_or_undefined(training['last_loss'])}; "
        "eval loss per epoch " + ", ".join(f"{loss:.3f}" for loss in training["eval_loss_per_epoch"])
    )
    console.print("time per stage: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary["stages"].items()))
    console.print(f"artifacts: {summary['run_dir']}; report {summary['report']}; current model: {summary['current_run'] or 'none yet'}")
    console.print(f"history: {summary['history']} (python -m pipeline runs list)")
    if not result.promoted:
        console.print("[bold]rolled back[/]: the gates failed; the previous model is still current")
        return EXIT_GATE_FAILED
    return EXIT_OK


HANDLERS = {
    ("dataset", "sample"): _dataset_sample,
    ("dataset", "export"): _dataset_export,
    ("dataset", "validate"): _dataset_validate,
    ("dataset", "seed-profiles"): _dataset_seed_profiles,
    ("train", None): _train,
    ("tiny-model", None): _tiny_model,
    ("convert", None): _convert,
    ("modelfile", None): _modelfile,
    ("validate", None): _validate_model,
    ("score", None): _score,
    ("run", None): _run,
    ("runs", "list"): _runs_list,
    ("shadow", None): _shadow,
    ("promote", None): _pin,
    ("rollback", None): _pin,
    ("runs", "compare"): _runs_compare,
    ("stage-base-model", None): _stage_base_model,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = HANDLERS[(args.command, getattr(args, f"{args.command}_command", None))]
    try:
        return handler(args)
    except PipelineError as exc:
        print(f"error: {exc.name}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a path that cannot be read or written: say which, no traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: nothing was published for the unfinished step", file=sys.stderr)
        return EXIT_INTERRUPTED
