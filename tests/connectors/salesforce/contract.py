"""Settings under which the ``salesforce`` connector runs self-contained, for the contract suite.

:func:`example_settings` starts an emulated org on 127.0.0.1 (TLS from a throw-away CA, trusted
through ``ca_bundle``) seeded with a small sales company, and yields the connection settings
pointing at it, for as long as the context is open.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.connectors.salesforce.emulator import SalesforceEmulator, make_tls
from tests.connectors.salesforce.seed import seed_org
from tests.connectors.salesforce.support import settings_for


@contextmanager
def example_settings() -> Iterator[dict[str, Any]]:
    """Connector settings for a running emulated org: 4 reps in 3 roles, 60 leads, 40 deals."""
    with tempfile.TemporaryDirectory(prefix="salesforce-contract-") as directory:
        tls = make_tls(Path(directory))
        with SalesforceEmulator(tls) as emulator:
            seed_org(emulator.org, opportunities=40, leads=60, reps=4)
            yield settings_for(emulator)
