"""Sparse codes: each class written as a few units, by L1-penalised logistic regression.

The paper expresses every emotion as a sparse combination of neurons. Here a
class's code is the coefficient vector of a one-vs-rest L1 logistic
regression from unit features (e.g. text attributions of prompts) to "is
this sample of the class". Features are scaled by their standard deviation
first, so that the penalty treats loud and quiet units alike; the
coefficients are reported on that scale.

"A few units" is a budget, not a guess at the penalty: for every class the
strength ``C`` is the largest on a log grid whose code uses at most
``max_units`` units, and at least one (a gap of the grid is bisected).

NMF (:func:`nmf_factors`) then summarises the classes' non-negative unit
profiles with a few factors: the paper's emotion atlas uses 2 factors for a
map and 7 for groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

#: The grid of inverse L1 strengths tried (half a decade apart), strongest penalty first. It stops at 10:
#: past it, separable classes converge slowly and gain nothing a budget of a few units can use.
C_GRID = tuple(float(c) for c in np.logspace(-3, 1, 9))

#: Classes x features from which :func:`fit_sparse_codes` fits classes in parallel processes by default:
#: below it, starting the workers (about a second) costs more than the fits (126 emotions x 512 units take
#: 15 s in one process on a 2-core CPU, x 3,072 units 57 s; benchmarks/sparse_codes.py).
PARALLEL_MIN_WORK = 20_000


@dataclass
class SparseCodes:
    """One sparse code per class.

    Attributes:
        classes: class names, in the order of ``coefficients``.
        units: the unit index of each feature column.
        coefficients: [classes, features] on standardised features; zero off the code.
        strengths: the ``C`` chosen per class.
    """

    classes: list[str]
    units: list[int]
    coefficients: np.ndarray
    strengths: list[float]

    def __repr__(self) -> str:  # the dataclass's printed every unit index and coefficient
        weights = int(np.count_nonzero(self.coefficients))
        return f"SparseCodes({len(self.classes)} classes over {len(self.units)} units, {weights} non-zero weights)"

    def code(self, name: str, positive_only: bool = False) -> list[tuple[int, float]]:
        """A class's code ``[(unit, weight)]``, largest weight first (non-zero weights only)."""
        row = self.coefficients[self.classes.index(name)]
        order = np.argsort(-row, kind="stable")
        return [(self.units[j], float(row[j])) for j in order
                if row[j] != 0 and (row[j] > 0 or not positive_only)]

    def top_unit(self, name: str) -> int | None:
        """The unit with the largest positive weight in a class's code (None: no positive weight)."""
        code = self.code(name, positive_only=True)
        return code[0][0] if code else None

    def to_json(self) -> dict:
        return {"codes": [{"class": name, "C": strength,
                           "units": [{"unit": u, "weight": round(w, 6)} for u, w in self.code(name)]}
                          for name, strength in zip(self.classes, self.strengths)]}


def _l1_fit(features: np.ndarray, targets: np.ndarray, strength: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    # liblinear solves the L1 problem exactly (coordinate descent): zeros are zeros, not small numbers.
    fit = LogisticRegression(l1_ratio=1.0, C=strength, solver="liblinear", max_iter=1000, random_state=0)
    fit.fit(features, targets)
    return fit.coef_[0]


def _sparsest_within_budget(features: np.ndarray, targets: np.ndarray, *, max_units: int,
                            grid: Sequence[float]) -> tuple[np.ndarray, float]:
    """The fit at the weakest penalty of ``grid`` using 1..``max_units`` units, and its ``C``.

    Where the grid jumps from no unit straight past the budget, the gap is bisected (in log C); a fit that
    still overshoots keeps its ``max_units`` largest weights.
    """
    from sklearn.svm import l1_min_c

    chosen, chosen_c, empty_c = None, float(grid[0]), None
    # Below this C every code is empty (a bound, exact for this loss and intercept): no fit needed there.
    first_nonempty = l1_min_c(features, targets, loss="log")
    for strength in sorted(grid):
        if strength < first_nonempty:
            empty_c = strength
            continue
        weights = _l1_fit(features, targets, strength)
        used = int(np.count_nonzero(weights))
        if used > max_units:
            if chosen is not None:
                break
            low, high = (empty_c if empty_c is not None else strength / 10), strength
            for _ in range(8):
                middle = float(np.sqrt(low * high))
                weights = _l1_fit(features, targets, middle)
                used = int(np.count_nonzero(weights))
                if used == 0:
                    low = middle
                elif used > max_units:
                    high = middle
                else:
                    return weights, middle
            weights = _l1_fit(features, targets, high)
            weights[np.argsort(-np.abs(weights))[max_units:]] = 0
            return weights, high
        if used:
            chosen, chosen_c = weights, strength
        else:
            empty_c = strength
    return (chosen if chosen is not None else np.zeros(features.shape[1])), chosen_c


def _default_jobs(work: int) -> int:
    """Processes for ``work`` classes x features: torch's thread count, the one budget ``--threads 1`` (a
    shared machine's advice) sets for the whole run, so that the fits do not fan out to every core anyway."""
    if work < PARALLEL_MIN_WORK:
        return 1
    import torch

    return torch.get_num_threads()


def fit_sparse_codes(features: np.ndarray, labels: Sequence[int], classes: Sequence[str], *,
                     units: Sequence[int] | None = None, max_units: int = 5,
                     grid: Sequence[float] = C_GRID, jobs: int | None = None,
                     on_step: Callable[[int, int], None] | None = None) -> SparseCodes:
    """One-vs-rest L1 logistic regression per class, each at the weakest penalty that keeps it sparse.

    Args:
        features: [samples, features], e.g. text attributions [prompts, units].
        labels: [samples] class index of each sample.
        classes: the class names (``labels`` index them).
        units: the unit index of each column (default ``range(features)``).
        max_units: the most units a code may use.
        grid: ``C`` values tried (ascending).
        jobs: processes fitting classes side by side, as joblib's ``n_jobs`` (-1: one per usable core; 1: in
            this process; None: as many as torch's intra-op threads, which ``neuronscope --threads N`` sets,
            for problems of at least :data:`PARALLEL_MIN_WORK` classes x features, else 1). The codes do not
            depend on it.
        on_step: called ``(classes done, classes)`` as each class's code is fitted (for a progress bar).

    Returns:
        :class:`SparseCodes` over standardised features.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features {features.shape} and labels {labels.shape} do not match")
    scale = features.std(axis=0)
    standardized = (features - features.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    targets = [(labels == index).astype(int) for index in range(len(classes))]
    for name, target in zip(classes, targets):
        if target.min() == target.max():
            raise ValueError(f"class {name!r} has no samples, or no other class has any")
    if jobs is None:
        jobs = _default_jobs(len(classes) * features.shape[1])
    fit = partial(_sparsest_within_budget, standardized, max_units=max_units, grid=grid)
    if jobs != 1:
        # Processes, not threads: liblinear draws from one process-wide generator, reseeded by every fit,
        # so threads would interleave their draws and the codes would depend on the timing.
        from joblib import Parallel, delayed

        done = Parallel(n_jobs=jobs, return_as="generator")(  # -1: joblib's count of usable cores
            delayed(fit)(target) for target in targets)  # in class order, each as soon as it is fitted
    else:
        done = (fit(target) for target in targets)
    fits = []
    for result in done:
        fits.append(result)
        if on_step is not None:
            on_step(len(fits), len(targets))
    coefficients = np.stack([weights for weights, _ in fits]) if fits else np.zeros((0, features.shape[1]))
    return SparseCodes(list(classes), list(units) if units is not None else list(range(features.shape[1])),
                       coefficients, [strength for _, strength in fits])


@dataclass
class NMFFactors:
    """Non-negative factors of a [rows, columns] matrix: ``matrix ≈ loadings @ components``.

    Attributes:
        loadings: [rows, k] (each row's weight on each factor).
        components: [k, columns] (each factor's profile over the columns, e.g. units).
        columns: the column ids (unit indices).
    """

    loadings: np.ndarray
    components: np.ndarray
    columns: list[int]

    def __repr__(self) -> str:  # the dataclass's printed both matrices
        rows, k = self.loadings.shape
        return f"NMFFactors({k} factors of {rows} rows x {len(self.columns)} columns)"

    @property
    def groups(self) -> np.ndarray:
        """The factor each row loads on most, [rows]."""
        return self.loadings.argmax(axis=1)

    def top_columns(self, factor: int, k: int = 5) -> list[int]:
        return [self.columns[j] for j in np.argsort(-self.components[factor], kind="stable")[:k]]


def nmf_factors(matrix: np.ndarray, k: int, *, columns: Sequence[int] | None = None, seed: int = 0) -> NMFFactors:
    """NMF with ``k`` factors of a non-negative [rows, columns] matrix (negative entries are clipped to 0)."""
    from sklearn.decomposition import NMF

    matrix = np.clip(np.asarray(matrix, dtype=np.float64), 0, None)
    if k > min(matrix.shape):
        raise ValueError(f"{k} NMF factors need at least {k} rows and columns; the matrix is {matrix.shape}")
    model = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=2000)
    loadings = model.fit_transform(matrix)
    return NMFFactors(loadings, model.components_, list(columns) if columns is not None else
                      list(range(matrix.shape[1])))
