"""Orchestration: Prefect flows and tasks, configuration, reports and the ``xmargin`` CLI."""
