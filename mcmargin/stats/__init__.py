"""Statistics shared by calibration and the scenario models (neither imports the other's code for them).

- :mod:`.correlation`: checking and repairing correlation matrices, PSD Cholesky factors;
- :mod:`.returns`: look-back windows and log returns of a price history.
"""
