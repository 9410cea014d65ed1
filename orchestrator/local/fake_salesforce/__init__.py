"""A fake Salesforce org over HTTP(S) for tests, the demo and plugin authors.

Run it on its own with ``python -m orchestrator.local.fake_salesforce --port 8443 --tls-dir DIR``;
it prints one JSON line with its ``url`` and ``ca_bundle`` when ready. See
:mod:`orchestrator.local.fake_salesforce.server` for the endpoints and ``/_fake/`` controls.
"""

from orchestrator.local.fake_salesforce.errors import ApiError
from orchestrator.local.fake_salesforce.org import Org
from orchestrator.local.fake_salesforce.server import make_server, serve

__all__ = ["ApiError", "Org", "make_server", "serve"]
