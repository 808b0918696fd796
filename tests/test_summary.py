"""The printed summary: every figure is a dataset sum (mcmargin.report)."""

import re

import pytest

from conftest import stress_config


@pytest.fixture(scope="module")
def run_ds():
    from jobs.stress import run

    return run(stress_config("portfolio.n_accounts=300", "scenarios.n=2000"))


def _figure(text, label):
    line = next(l for l in text.splitlines() if l.strip().startswith(label))
    return float(re.search(r"(-?[\d,]+) USD", line).group(1).replace(",", ""))


def test_summary_figures_equal_dataset_sums(run_ds):
    from mcmargin.output.summary import summary

    ds = run_ds
    text = summary(ds)
    expected = {
        "total equity": float(ds["equity"].sum()),
        "total initial margin": float(ds["im"].sum()),
        "total group initial margin": float(ds["group_im"].sum()),
        "total isolated margin": float(ds["isolated_im"].sum()),
        "netting benefit, accounts": float(ds["netting_benefit"].sum()),
        "netting benefit, groups": float(ds["isolated_im"].sum() - ds["group_im"].sum()),
        "cross-margin benefit": float(ds["group_netting_benefit"].sum()),
        "collateral margined alone": float(ds["collateral_im"].sum()),
    }
    for label, value in expected.items():
        assert _figure(text, label) == pytest.approx(value, abs=0.5), label
    # The two netting benefits are different figures, and both are named.
    assert expected["netting benefit, accounts"] != pytest.approx(expected["netting benefit, groups"])
    assert "sum of netting_benefit" in text and "isolated_im - group_im" in text
    negative = int((ds["netting_benefit"] < 0).sum())
    assert f"{negative:,} accounts have a negative netting benefit" in text and "collateral" in text


def test_negative_netting_benefit_is_collateral_risk(run_ds):
    ds = run_ds
    tol = 1e-9 * ds["isolated_im"] + 1e-6
    # ES is subadditive over the same scenarios: im <= isolated_im + collateral_im ...
    assert (ds["im"] <= ds["isolated_im"] + ds["collateral_im"] + tol).all()
    # ... so an account whose im exceeds its isolated margin (beyond rounding) holds risky collateral.
    neg = ds["netting_benefit"] < -tol
    assert neg.any()
    assert (ds["collateral_im"].where(neg, drop=True) > 0).all()
