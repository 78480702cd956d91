"""The benchmark notebooks, as code: ``pipeline_cells()`` and ``tiny_cells()``.

Each cell is ``(cell_id, source)``; ids are stable, as JupyterLab's are.
``write_pipeline_ipynb`` writes the same cells to ``benchmarks/pipeline.ipynb``
(without outputs) so that the notebook can be opened and run by hand.
"""

from __future__ import annotations

from pathlib import Path

LOAD_CELL = ("load-ext", "%load_ext incrcell")

# Sizes: (customers, transactions, training epochs). FULL is the benchmark (a plain run
# takes about 60 s on a loaded 2-core AMD EPYC VM); QUICK only checks that the machinery works.
FULL = (200_000, 2_000_000, 70)
QUICK = (10_000, 100_000, 3)


def _setup(n_customers: int, n_transactions: int) -> str:
    return f"""\
import numpy as np
import pandas as pd

SEED = 42
N_CUSTOMERS = {n_customers:_}
N_TRANSACTIONS = {n_transactions:_}
CATEGORIES = ["grocery", "fuel", "travel", "dining", "online", "electronics", "health", "utilities"]
CATEGORY_P = [0.30, 0.12, 0.05, 0.15, 0.18, 0.05, 0.08, 0.07]
REGIONS = ["north", "south", "east", "west", "central"]
print(f"numpy {{np.__version__}}, pandas {{pd.__version__}}")
"""


_GENERATE = """\
# Synthetic customers and a year of card transactions.
rng = np.random.default_rng(SEED)
customers = pd.DataFrame({
    "customer_id": np.arange(N_CUSTOMERS),
    "region": rng.choice(REGIONS, N_CUSTOMERS),
    "age": rng.integers(18, 90, N_CUSTOMERS),
    "income": rng.lognormal(10.5, 0.6, N_CUSTOMERS).round(2),
    "tenure_months": rng.integers(1, 120, N_CUSTOMERS),
    "is_premium": rng.random(N_CUSTOMERS) < 0.15,
})
activity = rng.gamma(2.0, 1.0, N_CUSTOMERS)  # some customers buy far more than others
customer_of_tx = rng.choice(N_CUSTOMERS, N_TRANSACTIONS, p=activity / activity.sum())
seconds = rng.integers(0, 365 * 24 * 3600, N_TRANSACTIONS)
raw = pd.DataFrame({
    "customer_id": customer_of_tx,
    "timestamp": np.datetime64("2024-01-01T00:00:00") + seconds.astype("timedelta64[s]"),
    "category": rng.choice(CATEGORIES, N_TRANSACTIONS, p=CATEGORY_P),
    "amount": rng.lognormal(3.2, 1.0, N_TRANSACTIONS).round(2),
    "online": rng.random(N_TRANSACTIONS) < 0.35,
    "merchant_id": rng.integers(0, 50_000, N_TRANSACTIONS),
})
# real exports are dirty: missing amounts, refunds, duplicated rows
raw.loc[rng.random(N_TRANSACTIONS) < 0.01, "amount"] = np.nan
refunds = rng.random(N_TRANSACTIONS) < 0.005
raw.loc[refunds, "amount"] = -raw.loc[refunds, "amount"]
raw = pd.concat([raw, raw.sample(20_000, random_state=SEED)], ignore_index=True)
raw = raw.sort_values(["customer_id", "timestamp"], ignore_index=True)
print(f"{len(raw):,} transactions, {len(customers):,} customers")
raw.head()
"""

_CLEAN = """\
tx = raw.drop_duplicates()
tx = tx[tx["amount"].notna() & (tx["amount"] > 0)].copy()
cap = tx["amount"].quantile(0.999)
tx["amount"] = tx["amount"].clip(upper=cap)
tx["log_amount"] = np.log1p(tx["amount"])
tx["hour"] = tx["timestamp"].dt.hour
tx["weekday"] = tx["timestamp"].dt.day_of_week
tx["month"] = tx["timestamp"].dt.month
tx["is_weekend"] = tx["weekday"] >= 5
tx["is_night"] = (tx["hour"] < 6) | (tx["hour"] >= 22)
tx["gap_days"] = tx.groupby("customer_id")["timestamp"].diff().dt.total_seconds() / 86400
# spend of the same customer over the 30 days up to each transaction (rows are sorted
# by customer and time, the order the grouped rolling window returns)
tx["spend_30d"] = (tx.groupby("customer_id").rolling("30D", on="timestamp")["amount"]
                   .sum().to_numpy())
print(f"{len(raw) - len(tx):,} rows removed, {len(tx):,} left; amounts capped at {cap:.2f}")
"""

_FEATURES = """\
snapshot = tx["timestamp"].max()
agg = tx.groupby("customer_id").agg(
    n_tx=("amount", "size"),
    total=("amount", "sum"),
    mean_amount=("amount", "mean"),
    std_amount=("amount", "std"),
    max_amount=("amount", "max"),
    mean_log_amount=("log_amount", "mean"),
    online_share=("online", "mean"),
    night_share=("is_night", "mean"),
    weekend_share=("is_weekend", "mean"),
    mean_gap=("gap_days", "mean"),
    max_gap=("gap_days", "max"),
    mean_spend_30d=("spend_30d", "mean"),
    max_spend_30d=("spend_30d", "max"),
    n_merchants=("merchant_id", "nunique"),
    last_tx=("timestamp", "max"),
    first_tx=("timestamp", "min"),
)
# how large a customer's purchases are compared with their own usual ones per category
pct_in_category = tx.groupby(["customer_id", "category"])["amount"].rank(pct=True)
agg["mean_category_pct"] = pct_in_category.groupby(tx["customer_id"]).mean()
agg["recency_days"] = (snapshot - agg["last_tx"]).dt.total_seconds() / 86400
agg["active_days"] = (agg["last_tx"] - agg["first_tx"]).dt.total_seconds() / 86400
share = tx.pivot_table(index="customer_id", columns="category", values="amount",
                       aggfunc="sum", fill_value=0)
share = share.div(share.sum(axis=1), axis=0).add_prefix("share_")
monthly = tx.groupby(["customer_id", "month"])["amount"].sum().unstack(fill_value=0)
agg["monthly_cv"] = monthly.std(axis=1) / (monthly.mean(axis=1) + 1)
agg["trend"] = (monthly.iloc[:, -3:].mean(axis=1) - monthly.iloc[:, :3].mean(axis=1)) / (monthly.mean(axis=1) + 1)
features = (customers.set_index("customer_id")
            .join(agg.drop(columns=["last_tx", "first_tx"]), how="inner")
            .join(share, how="left"))
features["total_vs_region"] = features["total"] / features.groupby("region")["total"].transform("median")
features = pd.get_dummies(features, columns=["region"], dtype=float).fillna(0)
print(f"{features.shape[1]} features for {len(features):,} customers")
features.describe().T.round(2).head(10)
"""

_LABELS = """\
# The churn label follows a hidden rule plus noise, as if exported from a CRM.
label_rng = np.random.default_rng(SEED + 1)
z = (-2.0 + 0.025 * features["recency_days"] - 0.5 * np.log1p(features["n_tx"])
     - 1.5 * features["online_share"] + 4.0 * features["share_travel"]
     - 0.6 * features["is_premium"] + 1.5 * np.tanh(-2 * features["trend"])
     + 0.4 * np.log(features["income"] / 40_000) + 0.02 * features["max_gap"]
     + label_rng.normal(0, 0.8, len(features)))
y = (z > 0).to_numpy(dtype=np.float64)
X = features.to_numpy(dtype=np.float64)
order = label_rng.permutation(len(X))
n_train = int(0.8 * len(X))
train_idx, test_idx = order[:n_train], order[n_train:]
mu, sigma = X[train_idx].mean(axis=0), X[train_idx].std(axis=0) + 1e-9
X_train, X_test = (X[train_idx] - mu) / sigma, (X[test_idx] - mu) / sigma
y_train, y_test = y[train_idx], y[test_idx]
print(f"train {X_train.shape}, test {X_test.shape}, churn rate {y.mean():.3f}")
"""

_MODEL = """\
def init_mlp(n_in, n_hidden, seed):
    r = np.random.default_rng(seed)
    return {"W1": r.normal(0, np.sqrt(2 / n_in), (n_in, n_hidden)), "b1": np.zeros(n_hidden),
            "W2": r.normal(0, np.sqrt(1 / n_hidden), (n_hidden, 1)), "b2": np.zeros(1)}


def forward(params, X):
    hidden = np.maximum(X @ params["W1"] + params["b1"], 0.0)
    return hidden, (hidden @ params["W2"] + params["b2"]).ravel()


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def predict_proba(params, X):
    return sigmoid(forward(params, X)[1])


def log_loss(p, y, eps=1e-12):
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
"""


def _train(epochs: int) -> str:
    return f"""\
EPOCHS, BATCH, LR, HIDDEN = {epochs}, 256, 2e-3, 64
params = init_mlp(X_train.shape[1], HIDDEN, SEED)
m = {{k: np.zeros_like(v) for k, v in params.items()}}
v = {{k: np.zeros_like(v) for k, v in params.items()}}
train_rng = np.random.default_rng(SEED + 2)
history, step = [], 0
for epoch in range(1, EPOCHS + 1):
    perm = train_rng.permutation(len(X_train))
    for start in range(0, len(perm), BATCH):
        batch = perm[start:start + BATCH]
        xb, yb = X_train[batch], y_train[batch]
        hidden, logits = forward(params, xb)
        d_logits = ((sigmoid(logits) - yb) / len(batch))[:, None]
        d_hidden = (d_logits @ params["W2"].T) * (hidden > 0)
        grads = {{"W1": xb.T @ d_hidden, "b1": d_hidden.sum(axis=0),
                  "W2": hidden.T @ d_logits, "b2": d_logits.sum(axis=0)}}
        step += 1
        for k in params:  # Adam
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
            params[k] -= LR * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v[k] / (1 - 0.999 ** step)) + 1e-8)
    history.append(log_loss(predict_proba(params, X_train), y_train))
    if epoch == 1 or epoch % 5 == 0:
        print(f"epoch {{epoch:3d}}  train loss {{history[-1]:.4f}}")
"""


_EVALUATE = """\
p_test = predict_proba(params, X_test)
pred = p_test >= 0.5
tp = int(np.sum(pred & (y_test == 1)))
fp = int(np.sum(pred & (y_test == 0)))
fn = int(np.sum(~pred & (y_test == 1)))
tn = int(np.sum(~pred & (y_test == 0)))
ranks = pd.Series(p_test).rank().to_numpy()
n_pos, n_neg = int(y_test.sum()), int(len(y_test) - y_test.sum())
metrics = {
    "accuracy": (tp + tn) / len(y_test),
    "precision": tp / max(tp + fp, 1),
    "recall": tp / max(tp + fn, 1),
    "f1": 2 * tp / max(2 * tp + fp + fn, 1),
    "auc": (ranks[y_test == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg),
    "log_loss": log_loss(p_test, y_test),
}
for name, value in metrics.items():
    print(f"{name:>10}: {value:.4f}")
confusion = pd.DataFrame([[tn, fp], [fn, tp]], index=["actual: stays", "actual: churns"],
                         columns=["predicted: stays", "predicted: churns"])
confusion
"""

_CALIBRATION = """\
calibration = (pd.DataFrame({"p": p_test, "y": y_test})
               .assign(decile=lambda d: pd.qcut(d["p"], 10, labels=False, duplicates="drop"))
               .groupby("decile").agg(mean_predicted=("p", "mean"), churn_rate=("y", "mean"),
                                      customers=("y", "size")))
calibration.round(3)
"""

_REPORT = """\
print("Churn model report")
print(f"  {len(features):,} customers, {features.shape[1]} features")
print(f"  {EPOCHS} epochs, final train loss {history[-1]:.4f}")
print(f"  test AUC {metrics['auc']:.3f}, F1 {metrics['f1']:.3f}")
print(f"  top decile churn rate {calibration['churn_rate'].iloc[-1]:.1%}")
"""

# The edit of the last cell in the "edit-last" scenario: a different heading.
EDITED_REPORT = _REPORT.replace('"Churn model report"', '"Churn model report (draft 2)"')


def pipeline_cells(
    incrcell: bool = True, sizes: tuple[int, int, int] = FULL
) -> list[tuple[str, str]]:
    """The realistic notebook; with ``incrcell`` its first cell is ``%load_ext incrcell``."""
    n_customers, n_transactions, epochs = sizes
    cells = [
        ("setup", _setup(n_customers, n_transactions)),
        ("generate", _GENERATE),
        ("clean", _CLEAN),
        ("features", _FEATURES),
        ("labels", _LABELS),
        ("model", _MODEL),
        ("train", _train(epochs)),
        ("evaluate", _EVALUATE),
        ("calibration", _CALIBRATION),
        ("report", _REPORT),
    ]
    cells = [(cid, src.rstrip("\n")) for cid, src in cells]
    return [LOAD_CELL, *cells] if incrcell else cells


def edited_last(cells: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``cells`` with the last (report) cell's source edited."""
    *head, (cid, _) = cells
    return [*head, (cid, EDITED_REPORT.rstrip("\n"))]


def tiny_cells(n: int = 200, incrcell: bool = True) -> list[tuple[str, str]]:
    """``n`` trivial cells, each reading the previous one's variable."""
    cells = [("tiny-0", "x_0 = 1")]
    cells += [(f"tiny-{i}", f"x_{i} = x_{i - 1} + 1") for i in range(1, n)]
    return [LOAD_CELL, *cells] if incrcell else cells


def write_pipeline_ipynb(path: Path) -> None:
    """Write the pipeline (with its ``%load_ext incrcell`` cell) as a notebook without outputs."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells.append(
        nbformat.v4.new_markdown_cell(
            "# incrcell benchmark: churn pipeline\n\nGenerated by `benchmarks/notebook.py`; "
            "run `benchmarks/run.py` to time it. Delete the first code cell to run it without incrcell.",
            id="intro",
        )
    )
    for cid, source in pipeline_cells(incrcell=True):
        nb.cells.append(nbformat.v4.new_code_cell(source, id=cid))
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
