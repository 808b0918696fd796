"""Scenario models: [scenario x asset] return and implied-vol shocks."""

from .base import ScenarioModel, build_scenarios, register
from .parametric import ParametricScenarios

__all__ = ["ScenarioModel", "ParametricScenarios", "build_scenarios", "register"]
