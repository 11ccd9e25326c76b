"""``python -m bench``: run the numbaent benchmark suite."""

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
