"""Entry point kept at the repository root, as in MindSpore ModelZoo: same as `ms-resnet eval`."""

import sys

from ms_resnet.cli import run

if __name__ == "__main__":
    sys.exit(run("eval", sys.argv[1:]))
