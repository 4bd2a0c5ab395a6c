"""Write data/housing.csv: 200 synthetic houses, the same bytes on every run (fixed seed).

price (in thousands) is a linear function of the four features plus noise, so a model that
sees every column clearly beats one trained without `rooms` and `area_m2`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "data" / "housing.csv"
ROWS = 200
SEED = 7


def make(rows: int = ROWS, seed: int = SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rooms = rng.integers(1, 7, rows)
    area = np.round(rooms * 22.0 + rng.normal(0.0, 12.0, rows) + 15.0, 1)
    age = rng.integers(0, 80, rows)
    distance = np.round(rng.uniform(0.5, 30.0, rows), 2)
    noise = rng.normal(0.0, 10.0, rows)
    price = 40.0 + 25.0 * rooms + 2.5 * area - 0.8 * age - 4.0 * distance + noise
    return pd.DataFrame(
        {
            "rooms": rooms,
            "area_m2": area,
            "age_years": age,
            "distance_km": distance,
            "price": np.round(price, 2),
        }
    )


if __name__ == "__main__":
    DATA.parent.mkdir(parents=True, exist_ok=True)
    make().to_csv(DATA, index=False)
    print(f"wrote {DATA}")
