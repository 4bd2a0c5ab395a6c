"""Train an Iris classifier and log it to MLflow.

Run by mlops-actions (`mlops-actions train`, the train action, or `mlops-actions run`), which
creates the MLflow run and passes MLFLOW_RUN_ID: `mlflow.start_run()` below logs into that run.
Run on its own, it creates a run of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DATA = Path(__file__).parent / "data" / "iris.csv"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--test-size", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args()


def signature(features: pd.DataFrame) -> ModelSignature:
    """Measurements in, the class id out. Declared rather than inferred from predictions:
    inferring the integer class id makes MLflow warn about integer columns on every run."""
    return ModelSignature(
        inputs=Schema([ColSpec("double", str(name)) for name in features.columns]),
        outputs=Schema([ColSpec("long")]),
    )


def main() -> None:
    args = parse_args()
    frame = pd.read_csv(DATA)
    features, target = frame.drop(columns=["species"]), frame["species"]
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=args.test_size, random_state=args.seed, stratify=target
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(C=args.C, max_iter=args.max_iter))
    with mlflow.start_run():
        mlflow.log_params(
            {"C": args.C, "max_iter": args.max_iter, "test_size": args.test_size, "seed": args.seed}
        )
        model.fit(x_train, y_train)
        predicted = model.predict(x_test)
        mlflow.log_metrics(
            {
                "accuracy": accuracy_score(y_test, predicted),
                "f1_macro": f1_score(y_test, predicted, average="macro"),
                "log_loss": log_loss(y_test, model.predict_proba(x_test)),
                "train_rows": float(len(x_train)),
            }
        )
        mlflow.sklearn.log_model(
            model, name="model", input_example=x_test.head(5), signature=signature(features)
        )
    print(f"accuracy={accuracy_score(y_test, predicted):.4f}")


if __name__ == "__main__":
    main()
