"""``neuronscope submit``: upload to a server, wait with a progress bar, fetch the report."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from neuronscope.cli.output import (
    EXIT_ANALYSIS_FAILED,
    EXIT_CANCELLED,
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    default_report_path,
    emit_report,
    load_config,
    parse_gate_args,
    require_file,
    run_gates,
    usage,
)
from neuronscope.progress import ProgressBar

API_KEY_ENV = "NEURONSCOPE_API_KEY"
#: Server answers that mean "your request is invalid" (usage), not "the server is unwell".
_USAGE_STATUSES = frozenset({400, 413, 415, 422})


def _client_error_exit(exc: Exception) -> CliError:
    from neuronscope.client import (
        ClientConnectionError,
        ClientError,
        JobCancelledError,
        JobFailedError,
        JobTimeoutError,
        ServerError,
    )

    assert isinstance(exc, ClientError)
    if isinstance(exc, ClientConnectionError):
        return CliError(f"connection failed: {exc.message}", EXIT_CONNECTION)
    if isinstance(exc, ServerError):
        code = EXIT_USAGE if exc.status_code in _USAGE_STATUSES else EXIT_CONNECTION
        hint = " (check --api-key or NEURONSCOPE_API_KEY)" if exc.status_code in (401, 403) else ""
        return CliError(f"server error ({exc.code}): {exc.message}{hint}", code)
    if isinstance(exc, JobFailedError):
        return CliError(f"job {exc.job.job_id} failed ({exc.code}): {exc.message}", EXIT_ANALYSIS_FAILED)
    if isinstance(exc, JobCancelledError):
        return CliError(f"job {exc.job.job_id} was cancelled: {exc.message}", EXIT_CANCELLED)
    if isinstance(exc, JobTimeoutError):
        return CliError(exc.message, EXIT_CANCELLED)
    return CliError(f"{exc.code}: {exc.message}", EXIT_CONNECTION)


def cmd_submit(args: argparse.Namespace) -> int:
    from neuronscope.client import Client, ClientError, Job, JobInfo, JobTimeoutError

    gates = parse_gate_args(args.fail_if)
    config = load_config(args.config)
    require_file(args.model, "model")
    require_file(args.dataset, "dataset")
    if args.timeout is not None and args.timeout <= 0:
        usage(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    wait = args.wait or bool(gates) or args.out is not None or args.html is not None
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    job: Job | None = None
    try:
        with Client(args.server, api_key=api_key, timeout=args.request_timeout) as client:
            job = client.analyze(args.model, args.dataset, config=config)
            if not wait:
                print(f"job {job.job_id} queued")
                print(f"status: {client.url}{job.path}")
                print(f"report: {client.url}{job.path}/report")
                return EXIT_OK
            if not args.quiet:
                print(f"job {job.job_id} submitted to {client.url}", file=sys.stderr)
            bar = ProgressBar(enabled=not args.quiet)

            def on_progress(info: JobInfo) -> None:
                if info.status == "running":
                    bar.update(info.progress.stage or "running", info.progress.fraction)
                elif info.status == "queued":
                    bar.update("queued", 0.0)

            try:
                job.wait(poll_interval=args.poll_interval, timeout=args.timeout, on_progress=on_progress)
            except (JobTimeoutError, KeyboardInterrupt) as exc:
                bar.close()
                with contextlib.suppress(ClientError):
                    job.cancel()
                if isinstance(exc, KeyboardInterrupt):
                    raise CliError(f"interrupted: job {job.job_id} cancelled", EXIT_CANCELLED) from None
                raise CliError(
                    f"job {job.job_id} did not finish within {args.timeout:g} s; it was cancelled",
                    EXIT_CANCELLED,
                ) from None
            finally:
                bar.close()
            report = job.report()
    except ClientError as exc:
        raise _client_error_exit(exc) from None
    except KeyboardInterrupt:
        raise CliError("interrupted", EXIT_CANCELLED) from None
    emit_report(report, args.out or default_report_path(args.model), args.html, quiet=args.quiet)
    return run_gates(gates, report, quiet=args.quiet)
