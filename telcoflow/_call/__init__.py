"""The parts of a call, which :class:`telcoflow.call.ActiveCall` composes; one invariant each.

- :mod:`._commands`: commands and their responses, correlated by id (``CallCommands``);
- :mod:`._audio_out`: the send buffer, the server's credit and playout (``AudioOut``);
- :mod:`._audio_in`: the bounded, drop-oldest queues of what the agent hears (``AudioIn``);
- :mod:`._events`: the handlers and the ordered channel of the call's events (``CallEvents``);
- :mod:`._records`: ``CallDetails`` and ``CallStats``, which the parts share.

They share the call's media connection, its protocol object and its stats, and know nothing of
one another (commands report their outcome through a function the facade gives them): the
facade's reader routes each event of the connection to the part it concerns, and the facade
ends them all at once, synchronously, when the call is over for the agent.
"""

from ._audio_in import AudioIn
from ._audio_out import MAX_FRAMES_PER_WRITE, AudioOut
from ._commands import CallCommands
from ._events import CallEvents
from ._records import CallDetails, CallStats

__all__ = [
    "MAX_FRAMES_PER_WRITE",
    "AudioIn",
    "AudioOut",
    "CallCommands",
    "CallDetails",
    "CallEvents",
    "CallStats",
]
