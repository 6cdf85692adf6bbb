"""The train node (not implemented yet)."""
import sys


def main(argv=None):
    print("mile_ros train: not implemented yet", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
