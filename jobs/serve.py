"""The what-if margin service over the night's cube.

    python -m jobs.serve cube=PATH [serve.host=127.0.0.1] [serve.port=8000] [serve.token=SECRET]

Loads the cube that ``python -m jobs.stress output.cube=PATH`` wrote, and
serves ``POST /whatif``, ``POST /max_size``, ``GET /account/{id}``,
``GET /group/{id}``, ``POST /reprice`` and ``/openapi.json`` with uvicorn
(docs/architecture.md, "What-if service").  Needs the ``serve`` extra
(``pip install -e ".[serve]"``).  All logic lives in :mod:`mcmargin.whatif`.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from jobs._cli import launch, user_errors
from mcmargin.common.settings import SERVE_RULES, check_settings

log = logging.getLogger("mcmargin.serve")


def build(cfg: DictConfig):
    """``(asgi app, settings)`` from ``cfg``: every setting checked and the cube loaded, nothing served."""
    c = OmegaConf.to_container(cfg, resolve=True)
    unknown = set(c.get("serve") or {}) - {k.split(".", 1)[1] for k in SERVE_RULES if k.startswith("serve.")}
    if unknown:
        from mcmargin.errors import ConfigError

        raise ConfigError(f"serve.{sorted(unknown)[0]}", "is not a setting of the what-if service")
    check_settings(c, SERVE_RULES)
    if c.get("cube") is None:
        from mcmargin.errors import ConfigError

        raise ConfigError("cube", "is required: give the cube's path (python -m jobs.serve cube=PATH)")
    try:
        from mcmargin.whatif.app import asgi
    except ImportError as exc:
        from mcmargin.errors import ConfigError

        raise ConfigError("cube", f"the service needs the serve extra ({exc.name} is missing): "
                                  "pip install -e \".[serve]\"") from None
    from mcmargin.whatif.calculator import Calculator
    from mcmargin.whatif.cube import load_cube

    s = c["serve"]
    calculator = Calculator(load_cube(c["cube"]), cache_rows=int(s["cache_rows"]))
    return asgi(calculator, s.get("token"), int(s["max_body_bytes"]), int(s["max_trades"])), s, calculator


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    with user_errors():
        app, s, calculator = build(cfg)
    import uvicorn

    print(f"what-if service on http://{s['host']}:{s['port']} over {cfg.cube}: {calculator.accounts.size:,} "
          f"accounts, {calculator.groups.size:,} pools, {calculator.n:,} scenarios"
          + ("" if s.get("token") is None else " (bearer token required)"), flush=True)
    uvicorn.run(app, host=str(s["host"]), port=int(s["port"]), log_level="warning", access_log=False)


if __name__ == "__main__":
    launch(main, keep_memory=False)    # a long-lived process: freed memory goes back to the system
