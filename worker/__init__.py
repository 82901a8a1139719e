"""The worker side: the Celery app and tasks (thin adapters) and the analysis engine."""
