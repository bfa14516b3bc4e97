"""``python -m realtime serve ...``: the same as the ``realtime`` command."""

from realtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
