"""Model recipes (``*.json``) and the bundled default model folder.

Installed as ``edge_colbert.models`` so that ``Encoder()`` finds the default model after a
plain ``pip install``; in a source checkout it is the top-level ``models/`` folder.
"""
