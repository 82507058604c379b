from resplat.cli.main import run

run()
