"""The policy_server node (not implemented yet)."""
import sys


def main(argv=None):
    print("mile_ros policy_server: not implemented yet", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
