#!/usr/bin/python3
"""scikit-learn peers on the shared splits (vowel, mcycle).

Classification (vowel: 9 inputs, 11 classes, 528 train / 462 test rows):
MLPClassifier, LogisticRegression (multinomial), KNeighborsClassifier,
GradientBoostingClassifier; test accuracy and test log-loss.

Regression (mcycle: 1 input, 100 train / 33 test rows): MLPRegressor,
GradientBoostingRegressor, KNeighborsRegressor, LinearRegression; test RMSE
and test negative log-likelihood per row under a Gaussian predictive
distribution N(prediction, s^2), where s^2 is the mean squared out-of-fold
residual of the chosen model on the training split (5-fold CV with the same
folds as the search). Out-of-fold, not in-sample: a 1-nearest-neighbour or an
overfitted MLP has in-sample residuals near 0 and would get a meaninglessly
narrow distribution. These peers give one variance for every x; mcycle's
noise is strongly heteroscedastic, which a mixture of experts models.

Protocol, the same for every model:
  - inputs standardised by a StandardScaler fitted inside each CV fold (a
    Pipeline); regression targets standardised too for the MLP
    (TransformedTargetRegressor), since its weight decay assumes unit scale;
  - a small grid of hyperparameters (GRIDS below), chosen by cross-validation
    on the training split only: vowel by 4-fold GroupKFold over the 8 training
    speakers (the train file holds speakers 0-7 in order, 66 rows each:
    11 vowels x 6 repetitions), so the search is speaker-independent like the
    test split; scored by accuracy. mcycle by 5-fold KFold (shuffled,
    random_state 0), scored by mean squared error;
  - the chosen setting refitted on the whole training split, scored once on
    the test split; every random_state is 0.
Log-loss: sklearn.metrics.log_loss (probabilities clipped to [1e-15, 1 -
1e-15]; a k-NN vote gives probability 0 to classes none of its neighbours
have, so its log-loss is dominated by that clip).

Usage: /usr/bin/python3 sklearn_peers.py [--data DIR] [--json OUT.json]
Prints a table; --json also writes every number and the chosen settings.
"""
import argparse
import json
import os
import sys
import time

try:
    import numpy as np
    import sklearn
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss, mean_squared_error
    from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError as e:  # pragma: no cover
    sys.exit("sklearn_peers.py: %s (Debian: apt-get install python3-sklearn; run with "
             "/usr/bin/python3)" % e)

import warnings

from sklearn.exceptions import ConvergenceWarning

warnings.filterwarnings("ignore", category=ConvergenceWarning)

SEED = 0

CLASSIFIERS = {
    "LogisticRegression": (
        LogisticRegression(multi_class="multinomial", solver="lbfgs", max_iter=10000),
        {"m__C": [0.01, 0.1, 1.0, 10.0, 100.0, 1e4]}),
    "MLPClassifier": (
        MLPClassifier(solver="adam", max_iter=3000, random_state=SEED),
        {"m__hidden_layer_sizes": [(32,), (64,), (64, 64)], "m__alpha": [1e-4, 1e-2, 1.0]}),
    "KNeighborsClassifier": (
        KNeighborsClassifier(),
        {"m__n_neighbors": [1, 3, 5, 7, 9, 15], "m__weights": ["uniform", "distance"]}),
    "GradientBoostingClassifier": (
        GradientBoostingClassifier(random_state=SEED),
        {"m__n_estimators": [100, 300], "m__max_depth": [2, 3], "m__learning_rate": [0.1]}),
}

REGRESSORS = {
    "LinearRegression": (LinearRegression(), {}),
    "MLPRegressor": (
        TransformedTargetRegressor(
            regressor=MLPRegressor(solver="lbfgs", max_iter=5000, random_state=SEED),
            transformer=StandardScaler()),
        {"m__regressor__hidden_layer_sizes": [(16,), (32,), (32, 32)],
         "m__regressor__activation": ["tanh", "relu"],
         "m__regressor__alpha": [1e-3, 1e-1, 1.0]}),
    "KNeighborsRegressor": (
        KNeighborsRegressor(),
        {"m__n_neighbors": [3, 5, 7, 10, 15], "m__weights": ["uniform", "distance"]}),
    "GradientBoostingRegressor": (
        GradientBoostingRegressor(random_state=SEED),
        {"m__n_estimators": [50, 100, 300], "m__max_depth": [1, 2, 3],
         "m__learning_rate": [0.05]}),
}


def load(path):
    a = np.loadtxt(path, delimiter=",", skiprows=1)
    return a[:, :-1], a[:, -1]


def settings(gs):
    return {k[3:]: (list(v) if isinstance(v, tuple) else v) for k, v in gs.best_params_.items()}


def run_vowel(d):
    xtr, ytr = load(os.path.join(d, "vowel_train.csv"))
    xte, yte = load(os.path.join(d, "vowel_test.csv"))
    ytr, yte = ytr.astype(int), yte.astype(int)
    if len(ytr) != 528:
        sys.exit("sklearn_peers.py: vowel_train.csv: expected 528 rows, got %d" % len(ytr))
    speakers = np.arange(len(ytr)) // 66
    out = []
    for name, (est, grid) in CLASSIFIERS.items():
        t0 = time.time()
        pipe = Pipeline([("s", StandardScaler()), ("m", est)])
        gs = GridSearchCV(pipe, grid, scoring="accuracy", cv=GroupKFold(n_splits=4),
                          refit=True)
        gs.fit(xtr, ytr, groups=speakers)
        proba = gs.predict_proba(xte)
        out.append({
            "data": "vowel", "model": name, "settings": settings(gs),
            "cv_accuracy": gs.best_score_,
            "accuracy": accuracy_score(yte, gs.predict(xte)),
            "log_loss": log_loss(yte, proba, labels=list(range(11))),
            "seconds": time.time() - t0})
    return out


def run_mcycle(d):
    xtr, ytr = load(os.path.join(d, "mcycle_train.csv"))
    xte, yte = load(os.path.join(d, "mcycle_test.csv"))
    cv = KFold(n_splits=5, shuffle=True, random_state=SEED)
    out = []
    for name, (est, grid) in REGRESSORS.items():
        t0 = time.time()
        pipe = Pipeline([("s", StandardScaler()), ("m", est)])
        gs = GridSearchCV(pipe, grid, scoring="neg_mean_squared_error", cv=cv, refit=True)
        gs.fit(xtr, ytr)
        best = gs.best_estimator_
        oof = cross_val_predict(best, xtr, ytr, cv=cv)
        s2 = float(np.mean((ytr - oof) ** 2))
        pred = best.predict(xte)
        r = yte - pred
        nll = float(np.mean(0.5 * np.log(2 * np.pi * s2) + 0.5 * r * r / s2))
        out.append({
            "data": "mcycle", "model": name, "settings": settings(gs),
            "cv_rmse": float(np.sqrt(-gs.best_score_)),
            "rmse": float(np.sqrt(mean_squared_error(yte, pred))),
            "nll": nll, "sigma": float(np.sqrt(s2)), "seconds": time.time() - t0})
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.normpath(os.path.join(here, "..", "..", "..",
                                                                     "shared", "data")))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = run_vowel(a.data) + run_mcycle(a.data)
    print("scikit-learn %s, numpy %s" % (sklearn.__version__, np.__version__))
    print("%-28s %-7s %9s %9s   %s" % ("model", "data", "accuracy", "log-loss", "setting"))
    for r in res:
        if r["data"] == "vowel":
            print("%-28s %-7s %9.4f %9.4f   %s" % (r["model"], "vowel", r["accuracy"],
                                                  r["log_loss"], json.dumps(r["settings"])))
    print("%-28s %-7s %9s %9s   %s" % ("model", "data", "RMSE", "NLL", "setting"))
    for r in res:
        if r["data"] == "mcycle":
            print("%-28s %-7s %9.3f %9.4f   %s" % (r["model"], "mcycle", r["rmse"], r["nll"],
                                                  json.dumps(r["settings"])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"sklearn": sklearn.__version__, "results": res}, f, indent=1)


if __name__ == "__main__":
    main()
