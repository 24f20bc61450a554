"""`python -m router.cli ...`: the same command line as the `switchboard` script."""

from router.cli import app

app(prog_name="switchboard")
