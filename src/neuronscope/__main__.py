"""``python -m neuronscope``: the same command line as ``neuronscope``."""

from neuronscope.cli import main

main()
