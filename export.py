"""Entry point kept at the repository root, as in MindSpore ModelZoo: same as `ms-resnet export`."""

import sys

from ms_resnet.cli import run

if __name__ == "__main__":
    sys.exit(run("export", sys.argv[1:]))
