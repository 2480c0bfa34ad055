"""Stage 3, the join: the same packet at every capture point, and the flows those packets make.

In: the packets table and what node state means (address owners, services, routes, dataplanes).
Out: hops (every sighting, grouped into packet instances, clock-corrected) and clock offsets
(hops.py); flows as their clients dialled them, with NAT legs, paths and verdicts (flows.py, built
from conversations.py, nat_legs.py, verdicts.py and summaries.py); WireGuard messages tied to their
plaintext (wireguard.py); and the focus that cuts all of it down to an incident first (focus.py).
Must not: read the bundle, or judge why a packet was lost (that is analyses/).
"""
