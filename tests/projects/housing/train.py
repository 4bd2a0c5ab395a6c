"""Train a house-price regressor and log it to MLflow (a test project of mlops-actions).

`--drop rooms,area_m2` drops those columns before fitting, so the logged model's signature
names only the columns it was trained on. Like examples/iris/train.py, it logs into the run
that mlops-actions created (MLFLOW_RUN_ID), or into a run of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

DATA = Path(__file__).parent / "data" / "housing.csv"
TARGET = "price"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drop", default="", help="comma-separated feature columns to leave out")
    parser.add_argument("--alpha", type=float, default=1.0, help="ridge regularisation strength")
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    frame = pd.read_csv(DATA)
    drop = [name.strip() for name in args.drop.split(",") if name.strip()]
    unknown = sorted(set(drop) - set(frame.columns) | ({TARGET} & set(drop)))
    if unknown:
        raise SystemExit(f"--drop names no feature column: {', '.join(unknown)}")
    features, target = frame.drop(columns=[TARGET, *drop]), frame[TARGET]
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.3, random_state=args.seed
    )
    model = Ridge(alpha=args.alpha)
    with mlflow.start_run():
        # Not named like the MLproject parameters, which mlops-actions logs itself.
        mlflow.log_params({"features": ",".join(features.columns), "ridge_alpha": args.alpha})
        model.fit(x_train, y_train)
        predicted = model.predict(x_test)
        rmse = float(np.sqrt(mean_squared_error(y_test, predicted)))
        mlflow.log_metrics(
            {
                "rmse": rmse,
                "mae": float(mean_absolute_error(y_test, predicted)),
                "r2": float(r2_score(y_test, predicted)),
            }
        )
        # The input example gives the model a signature naming exactly the columns it saw.
        mlflow.sklearn.log_model(model, name="model", input_example=x_test.head(5))
    print(f"rmse={rmse:.4f} features={','.join(features.columns)}")


if __name__ == "__main__":
    main()
