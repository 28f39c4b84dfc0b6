"""Prefect tasks: each one calls one public function of ``features``, ``models`` or ``margin``.

Tasks hold no maths. They name the step, retry where a file system can fail, cache where a
step is expensive and its inputs have a digest, and log what a risk officer needs to read
(counts, fallbacks, bounds that bit). Heavy packages are imported inside the tasks so that
importing the flows stays cheap. One module per group of steps:

- :mod:`~pipelines.tasks.data` — digest, sync, load and validate history, daily features;
- :mod:`~pipelines.tasks.forecasting` — walk-forward per model, comparison, champion;
- :mod:`~pipelines.tasks.tracking` — MLflow runs, registry aliases, report artifacts;
- :mod:`~pipelines.tasks.parameters` — calibration, backtest, signed publication;
- :mod:`~pipelines.tasks.reporting` — the report and the run folder;
- :mod:`~pipelines.tasks.margining` — a book margined with a verified parameter file.
"""

from pipelines.tasks.common import IO_BACKOFF, IO_RETRIES, PARAMS_STORE, frame_digest
from pipelines.tasks.data import (
    build_panel,
    digest_market_data,
    load_history,
    panel_digest,
    resolve_as_of,
    sync_market_data,
)
from pipelines.tasks.forecasting import (
    ModelComparison,
    WalkForwardJob,
    champion_job,
    compare_models,
    walk_forward_model,
)
from pipelines.tasks.margining import (
    liquidation_plans,
    load_book,
    load_parameters,
    margin_shard,
    methodology_from_parameters,
    shard_book,
    stack_shards,
    write_margin_results,
)
from pipelines.tasks.parameters import (
    attach_backtest,
    backtest_parameters,
    calibrate,
    load_previous_parameters,
    publish_parameters,
    write_backtest_summary,
)
from pipelines.tasks.reporting import (
    build_report,
    changes_frame,
    forecast_frame,
    margin_path_frame,
    write_run_folder,
)
from pipelines.tasks.tracking import Tracked, log_parameter_run, track_models

__all__ = [
    "IO_BACKOFF",
    "IO_RETRIES",
    "PARAMS_STORE",
    "ModelComparison",
    "Tracked",
    "WalkForwardJob",
    "attach_backtest",
    "backtest_parameters",
    "build_panel",
    "build_report",
    "calibrate",
    "champion_job",
    "changes_frame",
    "compare_models",
    "digest_market_data",
    "forecast_frame",
    "frame_digest",
    "liquidation_plans",
    "load_book",
    "load_history",
    "load_parameters",
    "load_previous_parameters",
    "log_parameter_run",
    "margin_path_frame",
    "margin_shard",
    "methodology_from_parameters",
    "panel_digest",
    "publish_parameters",
    "resolve_as_of",
    "shard_book",
    "stack_shards",
    "sync_market_data",
    "track_models",
    "walk_forward_model",
    "write_backtest_summary",
    "write_margin_results",
    "write_run_folder",
]
