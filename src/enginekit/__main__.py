"""``python -m enginekit``: the CLI through this interpreter (what reproduce.sh calls)."""

from enginekit.cli.main import main

if __name__ == "__main__":
    main()
