"""``drbroker jobs``: the DR-evidence jobs (broker.jobs) run once, from outside the serving processes."""

from __future__ import annotations

import json
import sys

import click


@click.group()
def jobs() -> None:
    """Background jobs: rehearsal scheduling, notification delivery, COS export."""


def job_name(job: object) -> str:
    return str(getattr(job, "job_name", None) or getattr(job, "thread_name", type(job).__name__))


@jobs.command("list")
def jobs_list() -> None:
    """The jobs this configuration runs."""
    from broker.app import build_runtime
    from broker.config import Settings

    runtime = build_runtime(Settings.from_env())
    for job in runtime.jobs:
        click.echo(f"{job_name(job):28} every {job.interval:g} s  {getattr(job, 'what', '')}")


@jobs.command("run-due")
@click.option("--only", multiple=True, help="run only this job (repeatable; see `drbroker jobs list`)")
@click.option("--json", "as_json", is_flag=True)
def jobs_run_due(only: tuple[str, ...], as_json: bool) -> None:
    """Run every job's due work once and exit (for a cron outside the broker, e.g. Code Engine)."""
    from broker.app import build_runtime
    from broker.config import Settings

    runtime = build_runtime(Settings.from_env())
    names = [job_name(j) for j in runtime.jobs]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise click.BadParameter(f"no job {', '.join(unknown)} (jobs: {', '.join(names) or 'none'})",
                                 param_hint="--only")
    results: dict[str, object] = {}
    failed = False
    for job in runtime.jobs:
        name = job_name(job)
        if only and name not in only:
            continue
        try:
            results[name] = job.run_once()
        except Exception as exc:  # one job's failure must not stop the others; the exit code says it
            failed = True
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    if as_json:
        json.dump(results, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for name, result in results.items():
            click.echo(f"{name}: {result}")
    runtime.store.engine.dispose()
    if failed:
        sys.exit(1)
