"""The parts of :class:`telcoflow.client.TelcoflowClient` that stand on their own.

- :mod:`._connect`: how the client reaches the service (TLS, credentials, handshakes, REST);
- :mod:`._control`: one control connection's requests, correlated with their responses;
- :mod:`._incoming`: handing calls to the application, in the order notified;
- :mod:`._records`: ``SessionRecord`` and ``ClientStats``, the client's public records;
- :mod:`._groups`: the one exception raised for an exception group of internal tasks.

The client itself keeps the sessions it claims (one record each, from the claim until its call
ends), the supervision of the control connection and the opening of media connections.
"""

from ._connect import USER_AGENT, Connector
from ._control import Control
from ._groups import unwrap
from ._incoming import HANDOFF_ORDER_WAIT, MAX_PENDING_INCOMING, Handoff, IncomingCalls
from ._records import MAX_LATENCIES_KEPT, ClientStats, SessionRecord

__all__ = [
    "HANDOFF_ORDER_WAIT",
    "MAX_LATENCIES_KEPT",
    "MAX_PENDING_INCOMING",
    "USER_AGENT",
    "ClientStats",
    "Connector",
    "Control",
    "Handoff",
    "IncomingCalls",
    "SessionRecord",
    "unwrap",
]
