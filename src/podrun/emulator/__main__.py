"""``python -m podrun.emulator --port 8000 --users-file users.txt`` (NAME:PASSWORD lines)."""

import typer

from .command import emulator

if __name__ == "__main__":
    typer.run(emulator)
