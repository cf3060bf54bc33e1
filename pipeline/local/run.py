"""``python -m pipeline run``: the whole pipeline on one machine, the state machine's stages in its
order with the same contracts and the same artifact layout (runs/<run_id>/ as in the bucket).

dataset export + ValidateData -> training -> GGUF export -> deploy -> quality gates -> promote or
rollback -> report. Inference runs in llama.cpp (the GGUF, prompted as Ollama prompts it) or, with
an Ollama URL, on that Ollama through the same deploy/promote/rollback as the EC2 host.
``runs/current.json`` names the production run and changes only when the gates pass.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import contracts, history, runs, storage
from pipeline.errors import PipelineError
from pipeline.evaluation.gates import QualityGates
from pipeline.serving.lifecycle import ServingConfig

LOCAL_POINTER = (contracts.RUNS_DIR, contracts.POINTER_NAME)  # beside the runs, not in a bucket
RUN_SUMMARY = "run.json"
TINY_MODEL_CACHE = Path(".cache") / "tiny-model"
# The tiny model is small and briefly pretrained, so the local default adapts every linear layer with
# a larger rank and learning rate than the spec's (which are for Mistral-7B); --set restores any.
TINY_MODEL_TRAINING = {
    "target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    "learning_rate": "3e-3",
    "r": "32",
    "lora_alpha": "64",
}
STAGES = ("dataset", "train", "convert", "deploy", "validate", "promote", "report")


class StageFailed(PipelineError):
    """A stage of the local run failed; the message names the stage and what to do."""


@dataclass
class RunOptions:
    root: str = "."
    run_id: str | None = None
    database_url: str | None = None
    seed_profiles: str | None = None  # required with database_url; the embedded sample brings its own
    sample_profiles: int = 3000
    base_model: str | None = None  # None: the tiny model (built once, cached)
    training_overrides: dict[str, str] = field(default_factory=dict)
    quantization: str = "q4_k_m"
    ollama_url: str | None = None
    gates: QualityGates = field(default_factory=QualityGates)
    concurrency: int = 2
    max_holdout: int | None = None
    min_rows: int | None = None
    progress: bool = True


@dataclass
class RunResult:
    run_id: str
    promoted: bool
    summary: dict[str, Any]


ADVICE = {
    "dataset": "check --database-url (or DATABASE_URL) and that the source tables hold scored profiles",
    "train": "check --base-model and the training overrides (--set); the run can be resumed with --run-id",
    "convert": "check that the base model is a Mistral/Llama Hugging Face directory with tokenizer.model",
    "deploy": "check that Ollama answers at --ollama-url",
    "validate": "check the dataset's holdout.jsonl and seeds.jsonl, and the inference backend",
    "promote": "production was not changed; rerun with --run-id to retry",
}


def _serving_config() -> ServingConfig:
    return ServingConfig(pointer_path=LOCAL_POINTER)


def _base_model(options: RunOptions, note: Callable[[str], None]) -> Path:
    if options.base_model:
        return Path(options.base_model)
    from pipeline.local import tiny_model

    cache = Path(options.root) / TINY_MODEL_CACHE
    pretrained = cache / tiny_model.PRETRAINING_FILE
    if not pretrained.is_file():  # absent, or built before the demo pretrained it
        note(f"building and pretraining the tiny Mistral-architecture model in {cache} (once, a few minutes)")
        shutil.rmtree(cache, ignore_errors=True)
        building = cache.with_name(cache.name + ".partial")
        shutil.rmtree(building, ignore_errors=True)
        tiny_model.build_pretrained_tiny_model(building, layers=2, progress=options.progress)
        building.rename(cache)  # an interrupted build leaves .partial, never a half-made cache
    return cache


def _earlier_exports(root: str) -> list:
    """When each run already in the history exported its dataset: the embedded database adds a week
    of new teacher scores after each, as a real table grows between weekly runs."""
    from pipeline.dataset import fresh

    exported = []
    for run_id in history.read(root).runs():
        try:
            exported.append(fresh.export_time(root, run_id))
        except (storage.StorageError, KeyError, ValueError):
            continue  # a run that never exported its dataset added no week
    return sorted(exported)


def run(options: RunOptions, note: Callable[[str], None] = print, on_stage: Callable[[str, int], None] | None = None) -> RunResult:
    """Run (or resume, when ``options.run_id`` names an unfinished run) the whole loop."""
    from pipeline.dataset import generate, source, validate
    from pipeline.evaluation import evaluate as evaluation
    from pipeline.gguf import convert, quant
    from pipeline.local import embedded
    from pipeline.local import sample as local_sample
    from pipeline.scoring import scorer
    from pipeline.serving import lifecycle
    from pipeline.serving.ollama import OllamaClient
    from pipeline.training import hyperparameters, trainer

    root = options.root
    run_id = runs.check_run_id(options.run_id) if options.run_id else runs.new_run_id()
    run_dir = Path(runs.run_uri(root, run_id))
    dataset_dir = Path(runs.dataset_uri(root, run_id))
    adapter_dir = Path(runs.adapter_uri(root, run_id))
    gguf_path = Path(runs.gguf_uri(root, run_id))
    report_dir = Path(runs.report_uri(root, run_id))
    config = _serving_config()
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"run_id": run_id, "run_dir": str(run_dir), "stages": timings}
    client = OllamaClient(options.ollama_url) if options.ollama_url else None

    def stage(name: str):
        @contextlib.contextmanager
        def scope():
            if on_stage:
                on_stage(name, STAGES.index(name))
            started = time.monotonic()
            try:
                yield
            except PipelineError as exc:
                if isinstance(exc, StageFailed):
                    raise
                raise StageFailed(f"stage {name} failed: {exc.name}: {exc} — {ADVICE.get(name, '')}") from exc
            finally:
                timings[name] = round(time.monotonic() - started, 1)

        return scope()

    try:
        with stage("dataset"):
            if (dataset_dir / contracts.MANIFEST_NAME).is_file():
                note(f"dataset: reusing {dataset_dir}")
            else:
                with embedded.database_url(options.database_url, options.sample_profiles, _earlier_exports(root)) as url:
                    generated = generate.generate_dataset(
                        source.ConnectionParams.from_url(url),
                        root,
                        run_id,
                        seed_ids=local_sample.seed_ids_for(options.database_url, options.seed_profiles),
                        min_rows=options.min_rows or contracts.DEFAULT_MIN_ROWS,
                        progress=options.progress,
                    )
                note(f"dataset: {json.dumps(generated['counts'])}")
            validation = validate.validate_data(str(dataset_dir), options.min_rows or contracts.DEFAULT_MIN_ROWS)
            summary["dataset"] = {"uri": str(dataset_dir), "counts": validation["counts"], "valid": validation["valid"]}
            if not validation["valid"]:
                raise StageFailed(f"stage dataset: the dataset is not valid: {json.dumps(validation['problems'])}")

        with stage("train"):
            base = _base_model(options, note)
            overrides = {**(TINY_MODEL_TRAINING if not options.base_model else {}), **options.training_overrides}
            metrics_file = adapter_dir / trainer.METRICS_FILE
            if metrics_file.is_file():
                note(f"train: reusing {adapter_dir}")
                training = json.loads(metrics_file.read_text())
            else:
                training = trainer.train(
                    trainer.TrainingPaths(dataset_dir, base, adapter_dir, run_dir / "checkpoints"),
                    hyperparameters.parse(overrides),
                    progress=options.progress,
                )
            curve = [point["loss"] for point in training["loss_curve"]]
            summary["training"] = {
                "adapter": str(adapter_dir),
                "first_loss": curve[0] if curve else None,
                "last_loss": curve[-1] if curve else None,
                "eval_loss_per_epoch": [e["eval_loss"] for e in training["eval_loss_per_epoch"]],
                "steps": training["global_steps"],
            }

        with stage("convert"):
            if Path(f"{gguf_path}.json").is_file() and gguf_path.is_file():
                note(f"convert: reusing {gguf_path}")
            else:
                convert.export_gguf(
                    str(base), str(adapter_dir), str(gguf_path), quant.OutputType(options.quantization), progress=options.progress
                )
            summary["gguf"] = str(gguf_path)

        with stage("deploy"):
            if client:
                deployed = lifecycle.deploy(client, str(gguf_path), run_id, config)
                summary["candidate"] = deployed["candidate"]
            else:
                # llama.cpp serves the file itself: "deploying" is writing the Modelfile a person
                # would use with `ollama create`.
                from pipeline.serving import modelfile

                (run_dir / lifecycle.MODELFILE_NAME).write_text(modelfile.render_modelfile(f"./{gguf_path.name}"))
                summary["candidate"] = str(gguf_path)

        with stage("validate"):
            backends, backend_name = scorer.backends_for(
                gguf_path=None if client else str(gguf_path),
                client=client,
                model=config.candidate(run_id) if client else None,
                concurrency=options.concurrency,
            )
            # The model in production (an earlier run's), if any, scores the same holdout: champion/challenger.
            in_production = lifecycle.read_pointer(root, config)
            champion_backends, champion_model, champion_unavailable = None, None, None
            if in_production and not client and not Path(str(in_production.get("production", ""))).is_file():
                champion_unavailable = (
                    f"the production model of run {in_production.get('run_id')} ({in_production.get('production')}) "
                    "is not a file here: not compared"
                )
            elif in_production:
                champion_model = config.production if client else str(in_production["production"])
                champion_backends, _ = scorer.backends_for(
                    gguf_path=None if client else champion_model,
                    client=client,
                    model=champion_model if client else None,
                    concurrency=options.concurrency,
                )
                summary["champion_run"] = in_production.get("run_id")
            verdict = evaluation.evaluate(
                backends,
                model=summary["candidate"],
                backend_name=backend_name,
                holdout_uri=str(dataset_dir / contracts.HOLDOUT_FILE),
                seeds_uri=str(dataset_dir / contracts.SEEDS_FILE),
                out_uri=str(report_dir),
                gates=options.gates,
                max_holdout=options.max_holdout or evaluation.DEFAULT_MAX_HOLDOUT,
                progress=options.progress,
                champion_backends=champion_backends,
                champion_model=champion_model,
                champion_unavailable=champion_unavailable,
                gguf_sha256=lifecycle.gguf_digest(str(gguf_path))[0],
            )
            summary["validation"] = verdict
            if champion_backends and in_production:
                # Shadow: the production model against the teachers on profiles scored since its dataset.
                from pipeline.dataset import source as dataset_source
                from pipeline.evaluation import shadow

                with embedded.database_url(options.database_url, options.sample_profiles, _earlier_exports(root)) as url:
                    conn = dataset_source.connect(dataset_source.ConnectionParams.from_url(url))
                    try:
                        shadowed, shadow_dir = shadow.run_shadow(
                            root,
                            conn,
                            champion_backends,
                            model=str(champion_model),
                            run_id=str(in_production["run_id"]),
                            since=shadow.since_of(root, str(in_production["run_id"])),
                            teachers=dataset_source.DEFAULT_TEACHERS,
                            seed_ids=local_sample.seed_ids_for(options.database_url, options.seed_profiles),
                            progress=options.progress,
                        )
                    finally:
                        conn.close()
                summary["shadow"] = {"report": storage.join(shadow_dir, "shadow.md"), **shadowed.to_json()}
                summary["shadow"].pop("largest")

        with stage("promote"):
            if verdict["passed"]:
                record = lifecycle.run_record(root, run_id, str(adapter_dir), str(gguf_path))
                if client:
                    lifecycle.promote(client, root, run_id, record, config)
                else:
                    lifecycle.write_pointer(root, run_id, record, model=str(gguf_path), production=str(gguf_path), config=config)
                summary["outcome"] = history.Outcome.PROMOTED
            else:
                if client:
                    lifecycle.rollback(client, root, run_id, config)
                summary["outcome"] = history.Outcome.ROLLED_BACK
            pointer = lifecycle.read_pointer(root, config)
            summary["current_run"] = pointer["run_id"] if pointer else None

        with stage("report"):
            summary["report"] = str(report_dir / "report.md")
            summary["pointer"] = lifecycle.pointer_uri(root, config)
            shadowed_line = {
                k: v for k, v in summary.get("shadow", {}).items() if k in ("pearson", "mae", "agreement", "profiles", "alert")
            }
            record = history.run_record(root, run_id, outcome=summary["outcome"], adapter_uri=str(adapter_dir), shadow=shadowed_line)
            history.append(root, record)
            summary["history"] = history.index_uri(root)
        storage.write_json(str(run_dir / RUN_SUMMARY), summary)  # last: it marks a finished run
    except StageFailed as exc:  # every run is in the history, a failed one too (an interrupted one resumes instead)
        history.append(root, history.run_record(root, run_id, outcome=history.Outcome.FAILED, adapter_uri=str(adapter_dir), error=str(exc)))
        raise
    finally:
        if client:
            client.close()
    return RunResult(run_id, summary["outcome"] == history.Outcome.PROMOTED, summary)
