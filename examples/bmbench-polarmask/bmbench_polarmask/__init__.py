"""An example head plugin for bmbench: see heads.py and bmbench's docs/plugins.md."""

__version__ = "0.1.0"
