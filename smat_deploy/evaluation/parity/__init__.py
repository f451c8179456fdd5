"""The ``parity`` tool: any engine against the PyTorch reference on real photos, per prompt kind."""
