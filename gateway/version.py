"""The installed leadgate version, for `leadgate --version`, the start log and
`leadgate_build_info`."""

from __future__ import annotations

import importlib.metadata


def _installed() -> str:
    try:
        return importlib.metadata.version("leadgate")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


VERSION = _installed()
