"""Instruments: what a position is worth today and under a scenario.

- :mod:`.black_scholes`: the one Black-Scholes pricer of the package;
- :mod:`.exposure`: the book compiled to columns, risk factors and holdings rows, and revaluation.
"""
