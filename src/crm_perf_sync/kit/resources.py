"""Files shipped with the package: the Alembic migrations and the default KPI and measure libraries.

A wheel carries them inside the package (``pyproject.toml``'s hatch ``force-include`` puts
``migrations/`` at ``crm_perf_sync/_migrations``, ``config/kpis/`` at ``crm_perf_sync/_kpis`` and
``config/measures/`` at ``crm_perf_sync/_measures``);
a source checkout (an editable install, the tests) has them at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

import crm_perf_sync

_PACKAGE = Path(crm_perf_sync.__file__).resolve().parent


def shipped(installed: str, checkout: str, marker: str) -> Path:
    """The shipped directory (``installed`` inside the package, else ``checkout`` at the top of the
    source tree) that holds ``marker``; raises FileNotFoundError naming what is missing."""
    for candidate in (_PACKAGE / installed, _PACKAGE.parent.parent / checkout):
        if (candidate / marker).is_file():
            return candidate
    raise FileNotFoundError(f"{checkout}/{marker} is missing from this installation")
