"""The analysis process: how it is launched (:mod:`.launch`, from the warm :mod:`.zygote` or as a
fresh interpreter), the environment it gets (:mod:`.environment`), and its entry point
(:mod:`.runner`: limits, confinement, then the engine). It knows nothing of jobs, Redis or Celery:
:mod:`worker.jobs` tells it what to run and maps its exit to a job's outcome."""
