"""Stage 1, inputs: the book and the price history, read, validated and normalised.

- :mod:`.book`: the :class:`~.book.Book` every later stage reads;
- :mod:`.files`: CSV/Parquet loaders, cell-by-cell validation, export;
- :mod:`.synthetic`: the built-in synthetic exchange;
- :mod:`.history`: price-history loading, validation and gap reporting.
"""
