"""The nanochat-shaped trainer that `scalemon run` launches (imports torch)."""
