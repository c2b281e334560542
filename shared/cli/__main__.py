"""``python -m shared.cli``: the ``antihack`` command (the supervisor starts its children so)."""

from shared.cli import main

if __name__ == "__main__":
    main()
