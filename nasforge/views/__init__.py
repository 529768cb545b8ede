"""Views of run directories for people: charts as inline SVG and the one-file HTML report (the
future dashboard's pages reuse them). They read runs through :mod:`nasforge.runner.summary`."""
