"""scalemon: a live terminal monitor for distributed training of nanochat-shaped GPT models."""

__version__ = "0.1.0"
