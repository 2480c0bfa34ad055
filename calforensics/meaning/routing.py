"""Which route a node uses for an address: the device (where a packet goes next) and the gateway
(for a pod on another node: that node's address)."""

from __future__ import annotations

import ipaddress

import pandas as pd

WIREGUARD_DEVICES = {"wireguard.cali": 4, "wg-v6.cali": 6}  # Calico's WireGuard devices, by IP version


def route_for(routes: pd.DataFrame, node: str, ip: str, tables: list[str] | None = None):
    """The longest-prefix route for ip on the node (a row of the routes table), or None. Calico's
    WireGuard rule (`not fwmark … lookup <table>`, before main) sends pod traffic through the table
    holding the routes on the WireGuard device first; its `throw` routes fall through to main.
    ``tables`` picks the tables to look in, in order, instead."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    mine = routes[routes["node"] == node]
    if tables is None:
        on_wireguard = mine["dev"].isin(list(WIREGUARD_DEVICES)) & (mine["table"] != "main")
        tables = [*sorted(set(mine.loc[on_wireguard, "table"])), "main"]
    for table in tables:
        best, found = -1, None
        for r in mine[mine["table"] == table].itertuples(index=False):
            dst = "0.0.0.0/0" if r.dst == "default" else r.dst
            try:
                net = ipaddress.ip_network(dst, strict=False)
            except ValueError:
                continue
            if addr.version == net.version and addr in net and net.prefixlen > best and (r.dev or r.type == "throw"):
                best, found = net.prefixlen, r
        if found is not None and found.type != "throw":
            return found
    return None


def route_dev(routes: pd.DataFrame, node: str, ip: str) -> str:
    """The device a node sends ip to ("" if no route)."""
    r = route_for(routes, node, ip)
    return str(r.dev) if r is not None else ""


def route_gateway(routes: pd.DataFrame, node: str, ip: str) -> str:
    """The gateway of the node's main-table route for ip ("" if none): for a remote pod block,
    the node that holds it (Calico's route `<block> via <node> …`, or over a tunnel its tunnel address)."""
    r = route_for(routes, node, ip, tables=["main"])
    return str(r.via) if r is not None and r.via else ""
