"""``python -m podrun.emulator --port 8000 --user alice:secret``."""

import typer

from .command import emulator

if __name__ == "__main__":
    typer.run(emulator)
