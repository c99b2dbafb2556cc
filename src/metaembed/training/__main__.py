"""``python -m metaembed.training CONFIG.yaml [--flags]``: training, runnable under torchrun and accelerate."""

from metaembed.training.flags import main

if __name__ == "__main__":
    main()
