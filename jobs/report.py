"""One self-contained HTML page of a dataset.

    python -m jobs.report dataset=PATH [output.path=FILE.html] [output.top=N]

Renders a stress, backtest or buffer-calibration dataset written by mcmargin
(:mod:`mcmargin.report`); the page goes beside the dataset, named after it,
unless ``output.path`` says otherwise.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from jobs._cli import launch, user_errors
from mcmargin.common.settings import REPORT_RULES, check_settings


def render(cfg: DictConfig):
    """``(html, path)``: the report of ``cfg.dataset`` and where it goes (nothing written)."""
    from pathlib import Path

    from mcmargin.errors import ConfigError
    from mcmargin.report import render_report, report_path_for
    from mcmargin.report.page import check_report_path

    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, REPORT_RULES)
    if not c.get("dataset"):
        raise ConfigError("dataset", "is required: give the dataset to render, e.g. dataset=out/stress.zarr")
    source = Path(str(c["dataset"])).expanduser()
    if not source.exists():
        raise ConfigError("dataset", f"{source} does not exist")
    out = c["output"].get("path") or report_path_for(source)
    out = check_report_path(out)
    if out.resolve() == source.resolve():
        raise ConfigError("output.path", f"{out} is the dataset itself; give another file")
    from mcmargin.output.store import open_dataset

    try:
        ds = open_dataset(source).load()
    except Exception as exc:     # any reader failure is a file that is not a dataset: say so, on one line
        raise ConfigError("dataset", f"{source} cannot be read as a Zarr or netCDF dataset "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    return render_report(ds, top=int(c["output"]["top"])), out


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    from mcmargin.report.page import write_text_atomically

    with user_errors(cfg):   # applies logging.format
        from mcmargin.common.logs import stage

        with stage("render", dataset=str(cfg.dataset)):
            html, out = render(cfg)
        with stage("write", path=str(out)):
            out = write_text_atomically(html, out)
    print(f"report written to {out} ({len(html.encode()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    launch(main)
