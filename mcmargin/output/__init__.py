"""The last stage: datasets written safely, and the summary a job prints.

- :mod:`.store`: refuse a path that is not ours, check the figures, write atomically, read back;
- :mod:`.summary`: the text summary of a stress dataset.
"""

from .store import check_figures, check_output_path, open_dataset, write_dataset, written_by_mcmargin
from .summary import summary

__all__ = ["check_figures", "check_output_path", "open_dataset", "summary", "write_dataset", "written_by_mcmargin"]
