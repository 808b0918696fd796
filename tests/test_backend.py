"""Backend choice (mcmargin.backend): ``auto`` looks for a GPU without importing JAX for nothing."""

import subprocess
import sys
from collections import namedtuple

import pytest

from conftest import ROOT
from mcmargin import backend

Mod = namedtuple("Mod", "module_finder name ispkg")


def test_gpu_plugin_detection(monkeypatch):
    import pkgutil

    real = pkgutil.iter_modules
    monkeypatch.setattr(pkgutil, "iter_modules", lambda *a: [Mod(None, "numpy", True)] if not a else real(*a))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert backend._jax_gpu_plugin_installed() is False
    monkeypatch.setattr(pkgutil, "iter_modules", lambda *a: [Mod(None, "jax_cuda12_plugin", True)])
    assert backend._jax_gpu_plugin_installed() is True


@pytest.mark.skipif(backend._jax_gpu_plugin_installed(), reason="a JAX GPU plugin is installed here")
def test_auto_on_a_cpu_machine_is_numpy_without_importing_jax():
    code = "import sys; from mcmargin.backend import resolve; print(resolve('auto'), 'jax' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    name, imported = p.stdout.split()
    assert imported == "False"
    assert name in ("numpy", "cupy")
