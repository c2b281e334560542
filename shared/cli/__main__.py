"""``python -m antihack.shared.cli``: the ``antihack`` command (how the supervisor starts it)."""

from antihack.shared.cli import main

if __name__ == "__main__":
    main()
