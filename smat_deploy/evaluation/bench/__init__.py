"""The ``bench`` tool: engines side by side, each measured in its own worker process."""
