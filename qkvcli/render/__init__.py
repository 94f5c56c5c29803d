"""Writers for a `Trace`: rich tables (``tables``) and plain machine formats (``machine``)."""
