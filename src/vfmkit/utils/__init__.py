"""Small helpers every layer may use (atomic file output, strict YAML, message text); imports nothing from vfmkit
beyond :mod:`vfmkit.errors`."""
