# Synthetic backtest dataset (7,000 dates x 5 portfolios) for timing jobs.calibrate_buffer: PYTHONPATH=. python benchmarks/buffer_sweep_data.py
import numpy as np, pandas as pd
from mcmargin.backtest.run import BacktestSettings, backtest_dataset
from mcmargin.output.store import write_dataset
g = np.random.default_rng(0)
D, P = 7000, 5
vol = np.exp(np.cumsum(g.normal(0, 0.05, D)) * 0.2) * 1e4
vol = vol[:, None] * g.uniform(0.5, 2, P)
loss = g.standard_t(5, (D, P)) * vol / np.sqrt(5 / 3)
es = 2.9 * vol
var = 2.4 * vol
dates = pd.bdate_range("1999-01-04", periods=D)
st = BacktestSettings(model="fhs", buffer=0.1)
ds = backtest_dataset(dates, [f"p{i}" for i in range(P)], var, es, loss, st, {"model": "synthetic"})
ds.attrs.update(first_date=str(dates[0].date()), last_date=str(dates[-1].date()))
ds["date"].attrs.pop("units", None)
write_dataset(ds, "out/bench_backtest.zarr")
print(ds["coverage"].values)
