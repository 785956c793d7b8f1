"""`python -m ms_resnet ...` is the same as the `ms-resnet` command."""

from ms_resnet.cli import main

main()
