"""``python -m forecaster {fit,validate,test,predict,bench,stream} ...`` (see :mod:`forecaster.cli`)."""

import sys

from forecaster.cli import main

if __name__ == "__main__":
    sys.exit(main())
