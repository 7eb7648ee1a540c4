"""smimegate: an S/MIME e-mail firewall (see DESIGN.md for the parts and who owns what)."""

__version__ = "0.1.0"
