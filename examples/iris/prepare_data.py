"""Write data/iris.csv from the copy of the Iris data set that scikit-learn ships.

This is how the DVC-tracked file was made; nothing is downloaded. Run it only to re-create the
data (then `dvc add data/iris.csv && dvc push`): the pipeline itself pulls it with DVC.
"""

from pathlib import Path

from sklearn.datasets import load_iris


def main() -> None:
    frame = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    frame.columns = [c.replace(" (cm)", "_cm").replace(" ", "_") for c in frame.columns]
    out = Path(__file__).parent / "data" / "iris.csv"
    out.parent.mkdir(exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.1f")
    print(f"wrote {len(frame)} rows to {out}")


if __name__ == "__main__":
    main()
