"""Bridges to other training stacks. Nothing here is imported by ``import llmgan``: each submodule
needs its own optional extra (``llmgan.integrations.trl``: ``pip install 'llmgan[trl]'``)."""
