"""``python -m esr_analysis`` = the ``esr`` command line (see :mod:`esr_analysis.cli`)."""

from esr_analysis.cli import main

raise SystemExit(main())
