"""The job use cases, each run inside the job's lease: :func:`~worker.jobs.run.run_job` (one
analysis, or the start of a split one), :func:`~worker.jobs.split.run_chunk` (one block of a split
job) and :func:`~worker.jobs.split.finish_split` (gather or merge after a wave of blocks). They
return an outcome or a :class:`~worker.jobs.outcome.Split` for the task layer to queue; they run
the analysis through :mod:`worker.child` and know nothing of Celery."""
