"""CLI command ``xmargin backtest``: walk-forward margin-parameter backtest with charts.

Writes to ``--out``:

* ``backtest_summary.csv`` — exactly :data:`margin.backtest.SUMMARY_COLUMNS`, one row per model,
  symbol, level and side over the evaluation window, plus ``static`` and ``champion``;
* ``backtest_stress.csv`` — the same per stress window (leading ``window`` column);
* ``backtest_validation.csv`` — the rows the champion was chosen on;
* ``apc_comparison.csv`` — the champion with anti-procyclicality off and on, side by side;
* ``apc_variants.csv`` — the champion's IM per anti-procyclicality tool, pooled;
* ``portfolio_backtest.csv`` — the five engine portfolios (basis, pair, short strangle, long
  straddle, covered call) margined with the champion's parameter path, against their realized
  P&L (``--no-portfolios`` skips it); ``portfolio_daily.csv`` — their daily IM, MM and P&L;
* ``backtest_report.md`` — the results tables in Markdown (also written into ``--docs``);
* ``forecasts.parquet`` — the model forecasts used (reusable with ``--forecasts``);
* charts (PNG): margin vs realized moves with breaches per symbol, APC on vs off.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd

    from margin.apc import ApcConfig
    from margin.backtest import BacktestResult

SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "DOGE", "BNB")
DOCS_START = "<!-- backtest-results:start -->"
DOCS_END = "<!-- backtest-results:end -->"


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
) -> None:
    """Walk-forward backtest of margin parameters for every model, static and champion."""
    first, last = _parse_day(start, "start"), _parse_day(end, "end")
    if last < first:
        raise BacktestInputError(f"--end {end} is before --start {start}")
    import pandas as pd
    from rich.console import Console

    from features.history import load_market_history
    from features.matrix import build_daily_panel
    from margin.backtest import BacktestConfig, parameter_backtest
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
    section = report_markdown(result, comparison, command, fallbacks, by_variant)
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
    typer.echo(f"wrote {out / 'backtest_summary.csv'} ({len(result.summary)} rows)")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("backtest")(backtest_command)
