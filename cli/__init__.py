"""The ``medst`` command line (installed as ``medst.cli``). Thin: options -> config -> library call."""
