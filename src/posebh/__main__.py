"""``python -m posebh``: the posebh command line."""

from posebh.cli import main

if __name__ == "__main__":
    main()
