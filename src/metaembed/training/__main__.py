"""``python -m metaembed.training CONFIG.yaml [--flags]``: the train command, runnable under torchrun."""

from metaembed.cli.train import main

if __name__ == "__main__":
    main()
