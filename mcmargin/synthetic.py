"""``from mcmargin.synthetic import synthetic_book``, as the README shows: the synthetic exchange lives in
:mod:`mcmargin.inputs.synthetic`."""

from .inputs.synthetic import *  # noqa: F401,F403
from .inputs.synthetic import __all__  # noqa: F401
