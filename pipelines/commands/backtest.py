"""CLI command ``xmargin backtest``: walk-forward margin-parameter backtest with charts.

Writes to ``--out``:

* ``backtest_summary.csv`` — exactly :data:`margin.backtest.SUMMARY_COLUMNS`, one row per model,
  symbol, level and side over the evaluation window, plus ``static`` and ``champion``;
* ``backtest_stress.csv`` — the same per stress window (leading ``window`` column);
* ``backtest_validation.csv`` — the rows the champion was chosen on;
* ``apc_comparison.csv`` — the champion with anti-procyclicality off and on, side by side;
* ``apc_variants.csv`` — the champion's IM per anti-procyclicality tool, pooled;
* ``im_vs_static_split.csv`` — the champion's IM over the static one's per symbol and side,
  split into a volatility part and a tail-shape part;
* ``portfolio_backtest.csv`` — the five engine portfolios (basis, pair, short strangle, long
  straddle, covered call) margined with the champion's parameter path, against their realized
  P&L (``--no-portfolios`` skips it); ``portfolio_daily.csv`` — their daily IM, MM and P&L;
* ``backtest_report.md`` — the results tables in Markdown (also written into ``--docs``);
* ``forecasts.parquet`` — the model forecasts used (reusable with ``--forecasts``);
* charts (PNG): margin vs realized moves with breaches per symbol, APC on vs off.

Unless ``--no-mlflow``, the invocation is also one parent run of the MLflow experiment
``xmargin-backtest`` (settings, data digest, code version, the champion and its rule, every file
above as an artifact) with one nested run per model, ``static`` and ``champion`` included
(metrics ``<stat>_<SYMBOL>_<LEVEL>_<side>`` and pooled ``<stat>_ALL_<LEVEL>``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd

    from margin.apc import ApcConfig
    from margin.backtest import BacktestConfig, BacktestResult
    from models.tracking import BacktestTracking

SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "DOGE", "BNB")
DOCS_START = "<!-- backtest-results:start -->"
DOCS_END = "<!-- backtest-results:end -->"
CHAMPION_RULE = (
    "on the validation window: pass Kupiec and Christoffersen (independence, conditional "
    "coverage) on every IM row, then lowest average IM, then lowest procyclicality"
)


class BacktestInputError(ValueError):
    """Bad command-line input for the backtest."""


def _parse_day(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BacktestInputError(f"--{name} {value!r} is not a date (YYYY-MM-DD)") from None


def _forecasts_from_models(
    panel: pd.DataFrame, models: list[str], first: dt.date, last: dt.date, horizon: int
) -> tuple[dict[str, pd.Series], dict[str, int]]:
    """Out-of-sample forecasts of ``models`` and the number of failed fits per model."""
    import warnings

    import pandas as pd

    from models.registry import make_model
    from models.walkforward import WalkForwardConfig, count_fallbacks, walk_forward

    config = WalkForwardConfig(
        start=pd.Timestamp(first, tz="UTC"), end=pd.Timestamp(last, tz="UTC"), horizons=(horizon,)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = walk_forward(panel, {m: make_model(m) for m in models}, config)
    return {m: result.forecasts[(m, horizon)] for m in models}, count_fallbacks(result)


def _read_forecasts(path: Path, models: list[str] | None) -> dict[str, pd.Series]:
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"forecast file {path} not found")
    frame = pd.read_parquet(path)
    need = {"model", "symbol", "date", "variance"}
    missing = need - set(frame.columns)
    if missing:
        raise BacktestInputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    names = models or sorted(frame["model"].unique())
    out = {}
    for name in names:
        part = frame[frame["model"] == name]
        if part.empty:
            raise BacktestInputError(f"{path}: no forecasts for model {name!r}")
        out[name] = part.set_index(["symbol", "date"])["variance"].sort_index()
    return out


def _write_forecasts(forecasts: dict[str, pd.Series], path: Path) -> None:
    import pandas as pd

    parts = [s.rename("variance").reset_index().assign(model=m) for m, s in forecasts.items()]
    frame = pd.concat(parts, ignore_index=True)[["model", "symbol", "date", "variance"]]
    frame.to_parquet(path, index=False)


def _csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.10g", lineterminator="\n")


def apc_comparison(off: pd.DataFrame, on: pd.DataFrame) -> pd.DataFrame:
    """Champion IM/MM rows with APC off and on side by side."""
    key = ["symbol", "level", "side"]
    cols = ["breaches", "avg_margin", "peak_to_trough", "max_increase_5d"]
    a = off[off["model"] == "champion"].set_index(key)[cols].add_suffix("_off")
    b = on[on["model"] == "champion"].set_index(key)[cols].add_suffix("_on")
    both = a.join(b)
    order = [f"{c}_{s}" for c in cols for s in ("off", "on")]
    return both[order].reset_index()


def apc_variants() -> dict[str, ApcConfig]:
    """Each anti-procyclicality tool alone (with the 10% decrease cap), and all together."""
    from margin.apc import ApcConfig

    return {
        "decrease_cap": ApcConfig(),
        "buffer": ApcConfig(buffer=True),
        "stress_weight": ApcConfig(stress_weight=True),
        "floor": ApcConfig(floor=True),
        "all": ApcConfig.all_on(),
    }


def apc_variant_table(summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Champion IM per APC variant, pooled over symbols and sides."""
    import pandas as pd

    rows = []
    for name, summary in summaries.items():
        im = summary[(summary["model"] == "champion") & (summary["level"] == "IM")]
        rows.append(
            {
                "apc": name,
                "breaches": int(im["breaches"].sum()),
                "expected": round(float((im["n"] * im["expected_rate"]).sum()), 1),
                "kupiec_pass": int((im["kupiec_p"] >= 0.05).sum()),
                "avg_im": float(im["avg_margin"].mean()),
                "peak_to_trough": float(im["peak_to_trough"].mean()),
                "max_increase_5d_mean": float(im["max_increase_5d"].mean()),
                "max_increase_5d_max": float(im["max_increase_5d"].max()),
            }
        )
    return pd.DataFrame(rows)


def _md_table(frame: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "" if v != v else f"{v:.4g}"
        return str(v)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def report_markdown(
    result: BacktestResult,
    comparison: pd.DataFrame,
    command: str,
    fallbacks: str,
    variants: pd.DataFrame | None = None,
    split: pd.DataFrame | None = None,
) -> str:
    """The Markdown results section (written to the report and, with ``--docs``, the docs)."""
    s = result.summary
    im = s[s["level"] == "IM"]
    champ = im[im["model"] == "champion"].set_index(["symbol", "side"])
    static = im[im["model"] == "static"].set_index(["symbol", "side"])
    ratio = (champ["avg_margin"] / static["avg_margin"]).rename("im_vs_static")
    check = champ[["n", "breaches", "kupiec_p", "christoffersen_cc_p", "zone", "avg_margin"]].join(
        static["avg_margin"].rename("static_avg_margin")
    )
    check = check.join(ratio).reset_index()
    passes = bool((champ["kupiec_p"] >= 0.05).all())
    pooled = float(champ["avg_margin"].mean() / static["avg_margin"].mean())
    worst = float(ratio.max())
    models = (
        im.groupby("model")
        .agg(
            kupiec_pass=("kupiec_p", lambda p: int((p >= 0.05).sum())),
            cc_pass=("christoffersen_cc_p", lambda p: int((p >= 0.05).sum())),
            rows=("kupiec_p", "size"),
            avg_im=("avg_margin", "mean"),
            peak_to_trough=("peak_to_trough", "mean"),
            max_increase_5d=("max_increase_5d", "mean"),
        )
        .reset_index()
    )
    lines = [
        f"Generated by `{command}`.",
        "",
        f"Evaluation window {result.start.date()} → {result.end.date()}; champion "
        f"**{result.champion}** ({result.champion_reason}).",
        "",
        f"- Champion IM passes Kupiec at 5% on every symbol and side: **{passes}**.",
        f"- Champion average IM / static average IM: pooled **{pooled:.3f}**, worst "
        f"symbol-side **{worst:.3f}** (target ≤ 0.8).",
        f"- Forecast fallbacks: {fallbacks}.",
        "",
        "### Champion IM (99%) per symbol and side",
        "",
        _md_table(check),
        "",
    ]
    if split is not None and not split.empty:
        lines += [
            "### Champion IM / static IM split into volatility and tail shape",
            "",
            "In units of the standard deviation `sd` of the h-day log moves the static baseline "
            "was calibrated on: `vol_ratio` = mean σ̂ / sd, `model_quantile` = mean |q| of the "
            "IM standardized-residual quantile used, `static_quantile` = |static quantile| / sd, "
            "`shape_ratio` = their ratio; `margin_vs_static` ≈ `vol_ratio × shape_ratio` "
            "(anti-procyclicality off).",
            "",
            _md_table(split),
            "",
        ]
    lines += [
        "### Every model, IM rows (evaluation window)",
        "",
        _md_table(models),
        "",
        "### Champion with anti-procyclicality off vs on (buffer 25%, stress weight 25%, "
        "longest-lookback floor, 10% decrease cap)",
        "",
        _md_table(comparison),
        "",
    ]
    if variants is not None:
        lines += [
            "### Champion IM per anti-procyclicality tool (pooled over symbols and sides)",
            "",
            _md_table(variants),
            "",
        ]
    return "\n".join(lines)


def portfolio_markdown(summary: pd.DataFrame, skew: str, first: dt.date, last: dt.date) -> str:
    """The Markdown results of the portfolio backtest (IM and MM rows per portfolio)."""
    cols = [
        "portfolio",
        "level",
        "n",
        "breaches",
        "expected_rate",
        "kupiec_p",
        "christoffersen_cc_p",
        "zone",
        "avg_margin_frac",
        "max_loss_to_margin",
    ]
    return "\n".join(
        [
            "### Portfolio backtest through the engine (champion parameter path)",
            "",
            f"Margin dates {first} → {last}; implied vol = DVOL × skew shape of {skew}; "
            "`avg_margin_frac` is margin / gross notional.",
            "",
            _md_table(summary[cols]),
            "",
        ]
    )


def _portfolio_run(
    data_dir: Path, result: BacktestResult, first: dt.date, last: dt.date, horizon: int
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Summary, daily rows and skew label of the portfolio backtest on the champion's path."""
    from features.history import load_market_history
    from margin.portfolio_backtest import (
        PortfolioBacktestConfig,
        SkewShape,
        daily_market,
        load_snapshot_skew,
        portfolio_backtest,
    )

    config = PortfolioBacktestConfig(horizon_days=horizon)
    symbols = config.symbols
    missing = [s for s in symbols if (result.champion, s) not in result.margins]
    if missing:
        raise BacktestInputError(
            f"the portfolio backtest needs {', '.join(symbols)} in --symbols "
            f"(missing {', '.join(missing)}); use --no-portfolios to skip it"
        )
    history = load_market_history(data_dir, list(symbols), end=f"{last.isoformat()}T23:59:59Z")
    market = daily_market(history, symbols)
    snapshots = sorted(
        (data_dir / "deribit_options_snapshots").glob(f"{config.option_underlying}_options_*.csv*")
    )
    skew = load_snapshot_skew(snapshots[-1], config.tenor_days) if snapshots else SkewShape.flat()
    scans = {s: result.margins[(result.champion, s)] for s in symbols}
    run = portfolio_backtest(market, scans, first, last, skew, config)
    return run.summary, run.daily, run.skew


def _write_docs(path: Path, section: str) -> None:
    from margin.params import atomic_write_bytes

    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{DOCS_START}\n{section}\n{DOCS_END}"
    if DOCS_START in text and DOCS_END in text:
        head, rest = text.split(DOCS_START, 1)
        _, tail = rest.split(DOCS_END, 1)
        text = head + block + tail
    else:
        text = text + ("\n" if text else "") + block + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def _charts(result: BacktestResult, apc_on: BacktestResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from margin.backtest import breaches_of

    written = []
    symbols = sorted(result.moves)
    fig, axes = plt.subplots(len(symbols), 1, figsize=(11, 2.6 * len(symbols)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, symbol in zip(axes, symbols, strict=True):
        moves = result.moves[symbol]
        window = (moves.index >= result.start) & (moves.index <= result.end)
        mv = moves[window]
        simple = np.expm1(mv)
        ax.plot(mv.index, simple, color="0.6", lw=0.6, label="realized move")
        for model, color in (("static", "tab:gray"), (result.champion, "tab:blue")):
            path = result.margins.get((model, symbol))
            if path is None:
                continue
            long, short = path["IM_long"][window], path["IM_short"][window]
            ax.plot(long.index, -long, color=color, lw=0.9, label=f"{model} IM")
            ax.plot(short.index, short, color=color, lw=0.9)
            if model == result.champion:
                for side, margin in (("long", long), ("short", short)):
                    hits = breaches_of(mv, margin, side)
                    hit_days = hits[hits].index
                    ax.scatter(hit_days, simple[hit_days], color="tab:red", s=12, zorder=3)
        ax.set_ylabel(symbol)
        ax.axhline(0, color="k", lw=0.4)
    axes[0].legend(loc="upper right", fontsize=7, ncols=3)
    axes[0].set_title("IM scan ranges (± fraction of price) vs realized moves; red = breach")
    fig.tight_layout()
    path = out / "margin_vs_moves.png"
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(len(symbols), 1, figsize=(11, 2.2 * len(symbols)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, symbol in zip(axes, symbols, strict=True):
        for res, label, color in (
            (result, "APC off", "tab:blue"),
            (apc_on, "APC on", "tab:orange"),
        ):
            path_ = res.margins.get((result.champion, symbol))
            if path_ is None:
                continue
            im = path_["IM_long"]
            im = im[(im.index >= result.start) & (im.index <= result.end)]
            ax.plot(im.index, im, label=label, color=color, lw=0.9)
        ax.set_ylabel(symbol)
    axes[0].legend(loc="upper right", fontsize=7)
    axes[0].set_title(f"{result.champion}: long IM scan range with anti-procyclicality off / on")
    fig.tight_layout()
    path = out / "apc_on_vs_off.png"
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    written.append(path)
    return written


def _forecasts_digest(forecasts: dict[str, pd.Series]) -> str:
    import pandas as pd

    from models.tracking import panel_digest

    frame = pd.concat({m: s.rename("variance") for m, s in sorted(forecasts.items())})
    return panel_digest(frame.to_frame())


def mlflow_params(config: BacktestConfig, result: BacktestResult) -> dict[str, object]:
    """Settings of a backtest as MLflow parameters (windows as ISO dates, decimals as given)."""
    from margin.apc import ApcConfig
    from models.tracking import code_version

    apc = ApcConfig.all_on()
    lookback = config.residual_lookback
    return {
        "eval_start": str(result.start.date()),
        "eval_end": str(result.end.date()),
        "validation_start": str(result.validation_start.date()),
        "validation_end": str(result.validation_end.date()),
        "validation_days": config.validation_days,
        "horizon_days": config.horizon_days,
        "im_confidence": config.im_confidence,
        "mm_confidence": config.mm_confidence,
        "min_residuals": config.min_residuals,
        "residual_window": "expanding" if lookback is None else f"rolling_{lookback}d",
        "min_scan_range": config.min_scan_range,
        "test_level": config.test_level,
        "apc_on_buffer_rate": apc.buffer_rate,
        "apc_on_buffer_reference_days": apc.buffer_reference_days,
        "apc_on_stress_weight_share": apc.stress_weight_share,
        "apc_on_floor": apc.floor,
        "apc_max_decrease": apc.max_decrease,
        "apc_variants": ",".join(apc_variants()),
        "code_version": code_version(),
    }


def parent_metrics(
    result: BacktestResult,
    variants: pd.DataFrame,
    portfolios: pd.DataFrame | None,
    test_level: float = 0.05,
) -> dict[str, float]:
    """Metrics of the parent run: the champion's pooled IM figures against the target, the
    APC variants (``apc_<variant>_<stat>``) and the portfolios
    (``portfolio_<stat>_<portfolio>_<LEVEL>``)."""
    import numpy as np

    from margin.backtest import CHAMPION, run_metrics

    champion = run_metrics(result.summary, CHAMPION, test_level)
    out = {f"champion_{k}": v for k, v in champion.items() if "_ALL_" in k}
    ratios = [
        v for k, v in champion.items() if k.startswith("avg_margin_vs_static_") and "_IM_" in k
    ]
    if ratios:
        out["champion_avg_margin_vs_static_worst_IM"] = max(ratios)
    for row in variants.to_dict("records"):
        for stat, value in row.items():
            if stat != "apc":
                out[f"apc_{row['apc']}_{stat}"] = float(value)
    if portfolios is not None:
        stats = ("breaches", "breach_rate", "kupiec_p", "christoffersen_cc_p", "avg_margin_frac",
                 "max_loss_to_margin")  # fmt: skip
        for row in portfolios.to_dict("records"):
            for stat in stats:
                out[f"portfolio_{stat}_{row['portfolio']}_{row['level']}"] = float(row[stat])
    return {k: v for k, v in out.items() if np.isfinite(v)}


def log_to_mlflow(
    result: BacktestResult,
    config: BacktestConfig,
    variants: pd.DataFrame,
    portfolios: pd.DataFrame | None,
    out: Path,
    extra_params: dict[str, object],
) -> BacktestTracking:
    """One parent run (settings, pooled metrics, the files of ``out`` as artifacts) and one
    nested run per model, ``static`` and ``champion`` included."""
    from margin.backtest import CHAMPION, run_metrics
    from models.tracking import log_backtest_run

    models = [*sorted(set(result.summary["model"]) - {CHAMPION}), CHAMPION]
    per_model = {}
    for model in models:
        source = result.champion if model == CHAMPION else model
        metrics = run_metrics(result.summary, model, config.test_level)
        metrics |= run_metrics(result.validation, source, config.test_level, prefix="val_")
        for window, rows in result.stress.groupby("window", sort=True):
            pooled = run_metrics(rows, model, config.test_level, prefix=f"stress_{window}_")
            metrics |= {k: v for k, v in pooled.items() if "_ALL_" in k}
        per_model[model] = metrics
    model_tags = {
        CHAMPION: {"champion_of": result.champion},
        result.champion: {"is_champion": "true"},
    }
    artifacts = {
        (f"charts/{f.name}" if f.suffix == ".png" else f.name): f
        for f in sorted(out.iterdir())
        if f.is_file() and f.suffix in {".csv", ".png", ".md", ".parquet"}
    }
    tags = {
        "champion": result.champion,
        "champion_rule": CHAMPION_RULE,
        "champion_reason": result.champion_reason,
        "window": f"{result.start.date()}..{result.end.date()}",
        "validation_window": f"{result.validation_start.date()}..{result.validation_end.date()}",
    }
    return log_backtest_run(
        run_name=f"backtest {result.start.date()}..{result.end.date()}",
        params={**mlflow_params(config, result), **extra_params, "champion": result.champion},
        metrics=parent_metrics(result, variants, portfolios, config.test_level),
        model_metrics=per_model,
        artifacts=artifacts,
        tags=tags,
        model_tags=model_tags,
    )


def backtest_command(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Market-history folder.")] = Path(
        "data"
    ),
    start: Annotated[str, typer.Option("--start", help="First evaluation date.")] = "2022-01-01",
    end: Annotated[str, typer.Option("--end", help="Last evaluation date.")] = "2024-12-31",
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("out/backtest"),
    symbols: Annotated[
        str, typer.Option("--symbols", help="Comma-separated base assets.")
    ] = ",".join(SYMBOLS),
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated model names (default: all).")
    ] = None,
    forecasts: Annotated[
        Path | None,
        typer.Option("--forecasts", help="Parquet of forecasts (model, symbol, date, variance)."),
    ] = None,
    horizon: Annotated[int, typer.Option("--horizon", help="MPOR in days.")] = 1,
    validation_days: Annotated[
        int, typer.Option("--validation-days", help="Champion-selection window before --start.")
    ] = 730,
    docs: Annotated[
        Path | None, typer.Option("--docs", help="Markdown file whose results section to rewrite.")
    ] = None,
    portfolios: Annotated[
        bool,
        typer.Option(
            "--portfolios/--no-portfolios",
            help="Also backtest five option/perp portfolios through the margin engine.",
        ),
    ] = True,
    mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow/--no-mlflow",
            help="Log the run to MLflow (experiment xmargin-backtest; MLFLOW_TRACKING_URI).",
        ),
    ] = True,
) -> None:
    """Walk-forward backtest of margin parameters for every model, static and champion."""
    first, last = _parse_day(start, "start"), _parse_day(end, "end")
    if last < first:
        raise BacktestInputError(f"--end {end} is before --start {start}")
    import pandas as pd
    from rich.console import Console

    from features.history import load_market_history
    from features.matrix import build_daily_panel
    from margin.backtest import BacktestConfig, margin_vs_static_split, parameter_backtest
    from models.registry import MODEL_NAMES

    console = Console(stderr=True)
    names = [m.strip() for m in models.split(",")] if models else None
    for name in names or []:
        if name not in MODEL_NAMES:
            raise BacktestInputError(
                f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}"
            )
    wanted = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if portfolios and not {"BTC", "ETH"} <= set(wanted):
        raise BacktestInputError(
            "the portfolio backtest needs BTC and ETH in --symbols; add them or pass "
            "--no-portfolios"
        )
    config = BacktestConfig(horizon_days=horizon, validation_days=validation_days)

    with console.status("loading market history"):
        history = load_market_history(data_dir, wanted, end=f"{last.isoformat()}T23:59:59Z")
        panel = build_daily_panel(history, wanted)
    warmup = validation_days + config.min_residuals + 30
    fc_first = first - dt.timedelta(days=warmup)
    failed_fits: dict[str, int] | None = None
    if forecasts is not None:
        variances = _read_forecasts(forecasts, names)
    else:
        chosen = names or list(MODEL_NAMES)
        with console.status(f"walk-forward forecasts of {len(chosen)} models from {fc_first}"):
            variances, failed_fits = _forecasts_from_models(panel, chosen, fc_first, last, horizon)
    out.mkdir(parents=True, exist_ok=True)
    if forecasts is None:
        _write_forecasts(variances, out / "forecasts.parquet")

    with console.status("backtesting parameters"):
        result = parameter_backtest(panel[["close"]], variances, first, last, config)
        champion_only = {result.champion: variances[result.champion]}
        variants = {}
        for name, apc in apc_variants().items():
            run = parameter_backtest(
                panel[["close"]], champion_only, first, last, config.model_copy(update={"apc": apc})
            )
            variants[name] = run
        apc_on = variants["all"]
    comparison = apc_comparison(result.summary, apc_on.summary)
    by_variant = apc_variant_table(
        {"off": result.summary, **{k: v.summary for k, v in variants.items()}}
    )
    _csv(by_variant, out / "apc_variants.csv")
    _csv(result.summary, out / "backtest_summary.csv")
    _csv(result.stress, out / "backtest_stress.csv")
    _csv(result.validation, out / "backtest_validation.csv")
    _csv(comparison, out / "apc_comparison.csv")
    _charts(result, apc_on, out)
    nonpositive = sum(int((v <= 0).sum()) for v in variances.values())
    missing = {
        m: int(
            v.reindex(panel.index)
            .loc[lambda s: s.index.get_level_values("date") >= pd.Timestamp(first, tz="UTC")]
            .isna()
            .sum()
        )
        for m, v in variances.items()
    }
    fits = (
        "failed fits (previous fit or EWMA used): "
        + ", ".join(f"{m} {n}" for m, n in failed_fits.items())
        if failed_fits is not None
        else f"failed fits: not recorded in {forecasts}"
    )
    fallbacks = (
        f"{nonpositive} non-positive forecasts; missing forecast days in the window: "
        + ", ".join(f"{m} {n}" for m, n in missing.items())
        + f"; {fits}"
    )
    command = f"xmargin backtest --data-dir {data_dir} --start {first} --end {last} --out {out}"
    for flag, value in (
        ("--symbols", symbols if wanted != list(SYMBOLS) else None),
        ("--models", models),
        ("--forecasts", forecasts),
        ("--docs", docs),
    ):
        if value is not None:
            command += f" {flag} {value}"
    if not portfolios:
        command += " --no-portfolios"
    split = margin_vs_static_split(result, variances[result.champion], config)
    _csv(split, out / "im_vs_static_split.csv")
    section = report_markdown(result, comparison, command, fallbacks, by_variant, split)
    p_summary = None
    if portfolios:
        with console.status("portfolio backtest through the engine"):
            p_summary, p_daily, skew = _portfolio_run(data_dir, result, first, last, horizon)
        _csv(p_summary, out / "portfolio_backtest.csv")
        _csv(p_daily, out / "portfolio_daily.csv")
        section += "\n" + portfolio_markdown(p_summary, skew, first, last)
    (out / "backtest_report.md").write_text(section + "\n", encoding="utf-8")
    if docs is not None:
        _write_docs(docs, section)
    console.print(f"champion: {result.champion} — {result.champion_reason}")
    if mlflow:
        from models.tracking import panel_digest  # imports MLflow

        with console.status("logging to MLflow"):
            info = log_to_mlflow(
                result,
                config,
                by_variant,
                p_summary,
                out,
                {
                    "symbols": ",".join(wanted),
                    "models": ",".join(variances),
                    "forecasts": "walk_forward" if forecasts is None else str(forecasts),
                    "data_digest": panel_digest(panel[["close"]]),
                    "forecasts_digest": _forecasts_digest(variances),
                    "command": command,
                },
            )
        console.print(
            f"MLflow: experiment xmargin-backtest, run {info.parent_run_id} "
            f"({len(info.model_run_ids)} model runs)"
        )
    typer.echo(f"wrote {out / 'backtest_summary.csv'} ({len(result.summary)} rows)")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("backtest")(backtest_command)
