"""A regressor on log targets with a held-out retransformation-bias correction."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data


class LeastSquares(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Ordinary least squares with an intercept on validated float arrays (``lstsq``).

    The fit of :class:`sklearn.linear_model.LinearRegression` without its per-call input
    validation, which dominated the many small HAR fits of a walk-forward run. Inputs are
    the arrays :class:`LogTargetRegressor` has already validated.

    Attributes
    ----------
    coef_ : ndarray, slopes. intercept_ : float.
    """

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Least-squares fit of ``y`` on ``[1, X]``."""
        X_arr, y_arr = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        design = np.column_stack([np.ones(len(X_arr)), X_arr])
        beta = np.linalg.lstsq(design, y_arr, rcond=None)[0]
        self.intercept_, self.coef_ = float(beta[0]), beta[1:]
        return self

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        """``intercept_ + X @ coef_``."""
        return np.asarray(np.asarray(X, dtype=float) @ self.coef_ + self.intercept_)


class LogTargetRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    r"""Fit ``estimator`` on ``log y`` and map predictions back with a smearing factor.

    :math:`E[y \mid x] = \exp(\widehat{\log y}) \cdot E[\exp(\varepsilon)]`. The factor
    :math:`E[\exp(\varepsilon)]` (Duan's 1983 smearing estimator) is estimated on
    **held-out** rows: the estimator is first fitted on the oldest rows, the factor is the
    mean of ``exp(residual)`` on the last ``holdout_fraction`` of the rows (after a ``gap``
    of rows so overlapping multi-day targets do not leak), and the estimator is then refitted
    on all rows. In-sample residuals understate the out-of-sample dispersion, so an
    in-sample factor would leave forecasts biased low.

    Rows must be in time order. ``y`` must be strictly positive (a variance).

    Parameters
    ----------
    estimator : regressor, optional
        Model of ``log y``; ordinary least squares (:class:`LeastSquares`) when ``None``.
    holdout_fraction : float
        Share of the (most recent) rows used to estimate the smearing factor.
    gap : int
        Rows skipped between the fitting rows and the held-out rows.
    min_holdout : int
        Below this many held-out rows the in-sample residuals are used instead.

    Attributes
    ----------
    estimator_ : fitted regressor on all rows.
    smearing_ : float, the multiplicative bias correction (>= 0).
    holdout_used_ : bool, whether the factor came from held-out rows.
    """

    def __init__(
        self,
        estimator: Any = None,
        holdout_fraction: float = 0.2,
        gap: int = 0,
        min_holdout: int = 20,
    ) -> None:
        self.estimator = estimator
        self.holdout_fraction = holdout_fraction
        self.gap = gap
        self.min_holdout = min_holdout

    def _new_estimator(self) -> Any:
        return LeastSquares() if self.estimator is None else clone(self.estimator)

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Fit on ``log y``; see the class docstring for the bias correction."""
        keep_frame = self.estimator is not None and hasattr(X, "columns")
        if keep_frame:
            # Tree models read pandas categoricals directly; validate y only.
            y_arr = np.asarray(y, dtype=float)
            self.n_features_in_ = X.shape[1]  # type: ignore[union-attr]
        else:
            X, y_arr = validate_data(self, X, y, y_numeric=True)
            y_arr = np.asarray(y_arr, dtype=float)
        if np.any(y_arr <= 0):
            raise ValueError("LogTargetRegressor needs strictly positive targets.")
        log_y = np.log(y_arr)
        n = log_y.size
        n_hold = int(np.floor(n * float(self.holdout_fraction)))
        n_fit = n - n_hold - int(self.gap)
        self.holdout_used_ = n_hold >= self.min_holdout and n_fit >= max(self.min_holdout, 2)
        if self.holdout_used_:
            first = self._new_estimator().fit(_rows(X, slice(0, n_fit)), log_y[:n_fit])
            resid = log_y[n - n_hold :] - first.predict(_rows(X, slice(n - n_hold, n)))
        self.estimator_ = self._new_estimator().fit(X, log_y)
        if not self.holdout_used_:
            resid = log_y - self.estimator_.predict(X)
        self.smearing_ = float(np.mean(np.exp(resid)))
        return self

    def predict_log(self, X: ArrayLike) -> NDArray[np.float64]:
        """Prediction of ``log y`` without the bias correction."""
        check_is_fitted(self, "estimator_")
        if not (self.estimator is not None and hasattr(X, "columns")):
            X = validate_data(self, X, reset=False)
        return np.asarray(self.estimator_.predict(X), dtype=float)

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        """Bias-corrected prediction of ``y`` (strictly positive)."""
        return np.exp(self.predict_log(X)) * self.smearing_

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags


def _rows(X: Any, rows: slice) -> Any:
    return X.iloc[rows] if hasattr(X, "iloc") else X[rows]
