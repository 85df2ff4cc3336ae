"""The vanishing-gradient laboratory: how gradients flow back through time in each cell.

The study behind ``python experiments/vanishing_gradients.py`` (``make run``), one
module per part:

- :mod:`vanishing.config`: the options (:class:`~vanishing.config.Config`), their
  checks, the ``--full`` sizes and the command line that reproduces a run;
- :mod:`vanishing.measure`: the measurements (gradient flow, Jacobian spectra, gate
  statistics, training) of one cell, with the variants of its initial params;
- :mod:`vanishing.sections`: the study's sections, each a function over the catalogue
  cells it applies to (by what each cell declares), and :func:`~vanishing.sections.run`;
- :mod:`vanishing.report`: ``summary.json``'s numbers, ``report.md`` and ``findings.md``;
- :mod:`vanishing.plots`: the figures;
- :mod:`vanishing.cli`: ``main(argv)``, the run folder and the resumable units.

The cells come from the catalogue (:func:`rnnjax.cells.names`) when the study runs,
so a cell registered with :func:`rnnjax.cells.register` joins with no edit here.
"""
