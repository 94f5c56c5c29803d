"""``python -m qkvcli`` runs the qkv command line."""

from .cli import main

if __name__ == "__main__":
    main()
