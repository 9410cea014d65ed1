"""The Celery application and its thin tasks, which hand every rotation to the engine."""
