"""`python -m medst ...`: the same command line (and the same error handling) as the `medst` script."""

from medst.cli.app import main

main()
