"""The audio projections (``assets``, ``previews``) and their migrations."""
