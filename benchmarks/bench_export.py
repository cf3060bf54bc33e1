"""Export throughput and memory, side by side with PostgreSQL's own COPY of the same query.

For each size (100k and 1M sample profiles) the script loads a database, then alternates
``python -m pipeline dataset export`` and ``psql -c "\\copy (<same query>) to stdout"`` several
times, each in a fresh process, recording wall time and the child's peak RSS (GNU time's %M).
Also the export in a warm process (the modules imported first, as the GenerateDataset Lambda has
them after its cold start; ``export_dataset`` timed alone). Reports medians, rows/s, the
export/COPY rate ratios and the RSS growth from 100k to 1M, and writes
the table to docs/benchmarks.md (the section between the markers).

Run: ``make bench`` (starts a throwaway PostgreSQL and sets DATABASE_URL), or
``DATABASE_URL=... python -m benchmarks.bench_export [--sizes 100000,1000000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

from benchmarks.measure import Sample, python_default_env, timed, write_section
from pipeline.dataset import source
from pipeline.local import sample

ROOT = Path(__file__).resolve().parents[1]

# Goals from the dataset issue.
RATE_GOAL = 0.5  # export rows/s at least half of COPY's
RSS_GROWTH_GOAL = 1.2  # peak RSS at 1M within 1.2x of peak RSS at 100k


def copy_command(database_url: str) -> list[str]:
    teachers = ",".join(f"'{teacher}'" for teacher in source.DEFAULT_TEACHERS)
    query = source.EXPORT_QUERY.replace("%(teachers)s", f"ARRAY[{teachers}]")
    one_line = re.sub(r"\s+", " ", query).strip()  # \copy takes the rest of one line
    return ["psql", database_url, "-X", "-q", "-c", f"\\copy ({one_line}) to stdout"]


def export_command(database_url: str, out: str, seed_profiles: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline",
        "dataset",
        "export",
        "--database-url",
        database_url,
        "--out",
        out,
        "--seed-profiles",
        seed_profiles,
        "--min-rows",
        "1",
        "--no-progress",
        "--no-validate",
    ]


def write_seed_profiles(path: Path) -> str:
    """The sample's seed-profile list (`pipeline dataset seed-profiles`): a real database needs one."""
    path.write_text(sample.seed_profile_list())
    return str(path)


def fetch_only_command(database_url: str) -> list[str]:
    """The export's transport alone: the same COPY and worker processes, each batch parsed into
    columns and discarded."""
    code = (
        "import sys\nfrom pipeline.dataset import source, stream\n"
        "params = source.ConnectionParams.from_url(sys.argv[1])\n"
        "with stream.ExportStream(params, source.DEFAULT_TEACHERS) as export:\n"
        "    sum(export.results(lambda columns: len(columns.twitter_id)))\n"
    )
    return [sys.executable, "-c", code, database_url]


def warm_export_command(database_url: str, out: str, seed_profiles: str) -> list[str]:
    """The export as the GenerateDataset Lambda runs it: the modules imported first (at its cold
    start), then ``export_dataset`` timed alone; prints its seconds."""
    code = (
        "import sys, time\nfrom pipeline.dataset import generate, source, split\n"
        "params = source.ConnectionParams.from_url(sys.argv[1])\n"
        "config = generate.ExportConfig(seed_ids=split.load_seed_ids(sys.argv[3]), min_rows=1, progress=False)\n"
        "started = time.perf_counter()\ngenerate.export_dataset(params, sys.argv[2], config)\n"
        "print(time.perf_counter() - started)\n"
    )
    return [sys.executable, "-c", code, database_url, out, seed_profiles]


def seconds_printed(command: list[str], env: dict[str, str]) -> float:
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def validate_command(out: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "dataset", "validate", "--data", out, "--min-rows", "1"]


def prepare_database(server_url: str, profiles: int) -> tuple[str, int]:
    name = f"bench_{profiles}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name}")
    admin.close()
    url = psycopg2.extensions.make_dsn(server_url, dbname=name)
    conn = psycopg2.connect(url)
    started = time.perf_counter()
    sample.load_sample(conn, profiles, seed=1)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # the planner's statistics, as a production table has them
        cursor.execute(
            source.EXPORT_QUERY.replace("SELECT twitter_id,", "SELECT count(*) FROM (SELECT twitter_id,", 1) + ") counted",
            {"teachers": list(source.DEFAULT_TEACHERS)},
        )
        rows = cursor.fetchone()[0]
    conn.close()
    print(f"loaded {profiles} profiles in {time.perf_counter() - started:.0f}s; the query returns {rows} rows", flush=True)
    return url, rows


def measure(url: str, repeats: int) -> tuple[list[Sample], list[Sample], list[Sample], list[Sample], list[float]]:
    exports, validations, copies, fetches, warm = [], [], [], [], []
    with tempfile.TemporaryDirectory() as work:
        seeds = write_seed_profiles(Path(work) / "seed-profiles.txt")
        env = python_default_env()
        # One round unmeasured: the bytecode cache written, the server's buffers warm for every command alike.
        timed(export_command(url, f"{work}/warm-up", seeds), env=env)
        timed(copy_command(url), env=env)
        for attempt in range(repeats):  # alternate, so drift on the machine hits all alike
            exports.append(timed(export_command(url, f"{work}/run{attempt}", seeds), env=env))
            copies.append(timed(copy_command(url), env=env))
            fetches.append(timed(fetch_only_command(url), env=env))
            validations.append(timed(validate_command(f"{work}/run{attempt}"), env=env))
            warm.append(seconds_printed(warm_export_command(url, f"{work}/warm{attempt}", seeds), env))
    return exports, validations, copies, fetches, warm


def median(samples: list[Sample], attribute: str) -> float:
    return statistics.median(getattr(s, attribute) for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL") or sys.exit("DATABASE_URL is not set (use `make bench`)")
    sizes = [int(size) for size in args.sizes.split(",")]

    rows_out = []
    peak = {}
    for profiles in sizes:
        url, rows = prepare_database(server_url, profiles)
        exports, validations, copies, fetches, warm = measure(url, args.repeats)
        export_rate = rows / median(exports, "seconds")
        copy_rate = rows / median(copies, "seconds")
        peak[profiles] = median(exports, "peak_rss_mib")
        rows_out.append(
            (
                profiles,
                rows,
                median(exports, "seconds"),
                export_rate,
                median(exports, "peak_rss_mib"),
                median(copies, "seconds"),
                copy_rate,
                median(copies, "peak_rss_mib"),
                export_rate / copy_rate,
                median(validations, "seconds"),
                median(validations, "peak_rss_mib"),
                rows / median(fetches, "seconds"),
                statistics.median(warm),
                rows / statistics.median(warm) / copy_rate,
            )
        )
        print(
            f"{profiles}: export {export_rate:,.0f} rows/s, COPY {copy_rate:,.0f} rows/s, ratio {export_rate / copy_rate:.2f}; "
            f"export peak RSS {peak[profiles]:.0f} MiB",
            flush=True,
        )

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL from `make bench`; medians of {args.repeats} alternating runs after one unmeasured round, each a fresh "
        "process (Python's bytecode cache on, as by default).",
        "",
        "| profiles | rows | export s | export rows/s | export peak RSS MiB | COPY s | COPY rows/s | psql peak RSS MiB "
        "| export / COPY rate | export's COPY + parse only rows/s | validate s | validate peak RSS MiB "
        "| export in a warm process s | its / COPY rate |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for profiles, rows, e_s, e_rate, e_rss, c_s, c_rate, c_rss, ratio, v_s, v_rss, f_rate, w_s, w_ratio in rows_out:
        lines.append(
            f"| {profiles:,} | {rows:,} | {e_s:.2f} | {e_rate:,.0f} | {e_rss:.0f} | {c_s:.2f} | {c_rate:,.0f} | {c_rss:.0f} "
            f"| {ratio:.2f} | {f_rate:,.0f} | {v_s:.2f} | {v_rss:.0f} | {w_s:.2f} | {w_ratio:.2f} |"
        )
    lines.append("")
    ratios = [row[8] for row in rows_out]
    lines.append(
        f"- Rate goal (export at least {RATE_GOAL:.0%} of COPY's rows/s): "
        f"{'met' if min(ratios) >= RATE_GOAL else 'NOT met'} (lowest ratio {min(ratios):.2f}), judged on the command's "
        f"fresh process; in a warm process, as the GenerateDataset Lambda runs it, the lowest is {min(row[13] for row in rows_out):.2f}."
    )
    if len(sizes) >= 2:
        growth = peak[sizes[-1]] / peak[sizes[0]]
        lines.append(
            f"- Memory goal (peak RSS at {sizes[-1]:,} within {RSS_GROWTH_GOAL}x of {sizes[0]:,}): "
            f"{'met' if growth <= RSS_GROWTH_GOAL else 'NOT met'} ({growth:.2f}x)."
        )
    print(write_section("export-benchmark", "Dataset export vs COPY", "\n".join(lines)))


if __name__ == "__main__":
    main()
