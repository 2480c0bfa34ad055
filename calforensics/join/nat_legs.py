"""NAT legs and names: which conntrack entry links which conversations, the backend and SNAT a flow's
conntrack entry shows where the captures did not, the service each flow dialled, and the flows only
conntrack knows about."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..meaning.services import Services
from .conversations import Conversations, Vocabulary, canonical

UNDERLAY_UDP_PORTS = (4789, 8472, 6081, 51820, 51821)


def is_underlay(proto: int, dport: int) -> bool:
    """Tunnel transport: VXLAN/Geneve/WireGuard UDP, IPIP and IPv6-in-IPv4."""
    return proto in (4, 41) or (proto == 17 and dport in UNDERLAY_UDP_PORTS)


def conntrack_links(ct: pd.DataFrame, conv: Conversations, vocab: Vocabulary) -> tuple[list[int], list[int]]:
    """The conversation of each conntrack entry's original and reply tuple (-1: never captured).
    A NATed entry whose two tuples were both captured links their conversations into one flow."""
    key_of = dict(zip(zip(*(c.tolist() for c in conv.tuples), strict=True), range(conv.count), strict=True))

    def ct_key(proto, src, sport, dst, dport) -> int:
        tup = canonical(np.int64(proto), vocab.id(str(src)), np.int64(sport), vocab.id(str(dst)), np.int64(dport))
        return key_of.get(tuple(int(x) for x in tup), -1)

    ct_orig = [ct_key(r.proto_num, r.orig_src, r.orig_sport, r.orig_dst, r.orig_dport) for r in ct.itertuples()]
    ct_reply = [ct_key(r.proto_num, r.reply_src, r.reply_sport, r.reply_dst, r.reply_dport) for r in ct.itertuples()]
    return ct_orig, ct_reply


def conntrack_only_flows(
    ct: pd.DataFrame,
    ct_orig: list[int],
    ct_reply: list[int],
    comp: np.ndarray,
    captured: set[int],
    first_id: int,
    services: Services,
) -> list[dict]:
    """Conversations known to the kernel and never captured: one flow per conversation, even when
    several nodes track it, numbered from ``first_id``. Tunnel underlay entries are left out: their
    packets are the encapsulated hops of captured flows."""
    seen: set[tuple] = set()
    extra = []
    for r, a, b in zip(ct.itertuples(index=False), ct_orig, ct_reply, strict=True):
        ends = sorted([(str(r.orig_src), int(r.orig_sport)), (str(r.orig_dst), int(r.orig_dport))])
        conversation = (int(r.proto_num), *ends)
        known = (a >= 0 and int(comp[a]) in captured) or (b >= 0 and int(comp[b]) in captured)
        if known or is_underlay(int(r.proto_num), int(r.orig_dport)):
            continue
        if conversation in seen:
            continue
        seen.add(conversation)
        extra.append(conntrack_only_flow(first_id + len(extra), r, services))
    return extra


def conntrack_legs(f: pd.DataFrame, ct: pd.DataFrame) -> None:
    """The conntrack entry with the flow's original tuple: its state, and NAT legs not seen in captures."""
    keys = ["proto_num", "client_ip", "client_port", "server_ip", "server_port"]
    ctk = ct.rename(
        columns={
            "orig_src": "client_ip",
            "orig_sport": "client_port",
            "orig_dst": "server_ip",
            "orig_dport": "server_port",
        }
    ).drop_duplicates(keys)
    ctk = ctk[[*keys, "state", "nat", "reply_src", "reply_sport", "reply_dst", "reply_dport"]].astype(
        {"client_ip": object, "server_ip": object}
    )
    m = (
        f.reset_index()[["flow_id", *keys]]
        .astype({"client_ip": object, "server_ip": object})
        .merge(ctk, on=keys, how="left")
        .set_index("flow_id")
    )
    f["ct_state"] = m["state"].astype(object).where(m["state"].notna(), "").to_numpy()
    f["ct_nat"] = m["nat"].astype(object).where(m["nat"].notna(), "").to_numpy()
    dnat = (m["nat"].astype(str).isin(["dnat", "both"]) & (f["backend_ip"] == "")).to_numpy()
    f.loc[dnat, "backend_ip"] = m.loc[dnat, "reply_src"].to_numpy()
    f.loc[dnat, "backend_port"] = m.loc[dnat, "reply_sport"].astype(np.int64).to_numpy()
    snat = (m["nat"].astype(str).isin(["snat", "both"]) & (f["snat_ip"] == "")).to_numpy()
    f.loc[snat, "snat_ip"] = m.loc[snat, "reply_dst"].to_numpy()
    f.loc[snat, "snat_port"] = m.loc[snat, "reply_dport"].astype(np.int64).to_numpy()
    _dialled_from_conntrack(f, ct)


def _dialled_from_conntrack(f: pd.DataFrame, ct: pd.DataFrame) -> None:
    """Flows captured only after DNAT (no capture before the NAT point, e.g. eBPF's TC NAT on the
    client veth when that veth was not captured): a DNAT entry whose reply comes from the flow's
    server to its client says what was dialled. The server becomes the dialled address, the
    captured one its backend."""
    dnat = ct[ct["nat"].astype(str).isin(["dnat", "both"])]
    if dnat.empty:
        return
    keys = ["proto_num", "client_ip", "client_port", "server_ip", "server_port"]
    by_reply = (
        dnat.rename(
            columns={
                "reply_dst": "client_ip",
                "reply_dport": "client_port",
                "reply_src": "server_ip",
                "reply_sport": "server_port",
            }
        )
        .drop_duplicates(keys)[[*keys, "orig_dst", "orig_dport", "state", "nat"]]
        .astype({"client_ip": object, "server_ip": object})
    )
    m = (
        f.reset_index()[["flow_id", *keys]]
        .astype({"client_ip": object, "server_ip": object})
        .merge(by_reply, on=keys, how="left")
        .set_index("flow_id")
    )
    hit = (m["orig_dst"].notna() & (f["backend_ip"] == "")).to_numpy()
    if not hit.any():
        return
    f.loc[hit, "backend_ip"] = f.loc[hit, "server_ip"].to_numpy()
    f.loc[hit, "backend_port"] = f.loc[hit, "server_port"].to_numpy()
    f.loc[hit, "server_ip"] = m.loc[hit, "orig_dst"].astype(str).to_numpy()
    f.loc[hit, "server_port"] = m.loc[hit, "orig_dport"].astype(f["server_port"].dtype).to_numpy()
    unset = hit & (f["ct_state"] == "").to_numpy()
    f.loc[unset, "ct_state"] = m.loc[unset, "state"].astype(str).to_numpy()
    f.loc[unset, "ct_nat"] = m.loc[unset, "nat"].astype(str).to_numpy()


def services_of(f: pd.DataFrame, services: Services) -> tuple[list[str], list[str]]:
    """Each flow's service and how it was found: the dialled address first, else (connect-time LB)
    the services whose BPF NAT backends hold the address the flow went to."""
    names, via = [], []
    for ip, port, proto in zip(f["server_ip"].tolist(), f["server_port"].tolist(), f["proto"].tolist(), strict=True):
        name, how = services.dialled(str(ip), int(port), proto)
        # connect-time LB rewrites TCP connect() only (Calico's default BPFConnectTimeLoadBalancing=TCP);
        # UDP to a service is NATed per packet, after the client veth's tap, which shows the service
        if not name and proto == "tcp" and (candidates := services.candidates(str(ip), int(port), proto)):
            name, how = ", ".join(candidates), "backend"
        names.append(name)
        via.append(how)
    return names, via


def conntrack_only_flow(fid: int, r, services: Services) -> dict:
    """A conversation only conntrack knows about."""
    backend = (
        (r.reply_src, int(r.reply_sport)) if (r.reply_src, r.reply_sport) != (r.orig_dst, r.orig_dport) else ("", -1)
    )
    snat = (r.reply_dst, int(r.reply_dport)) if (r.reply_dst, r.reply_dport) != (r.orig_src, r.orig_sport) else ("", -1)
    return {
        "flow_id": fid,
        "proto": str(r.proto),
        "proto_num": int(r.proto_num),
        "client_ip": r.orig_src,
        "client_port": int(r.orig_sport),
        "server_ip": r.orig_dst,
        "server_port": int(r.orig_dport),
        "service": services.dialled(str(r.orig_dst), int(r.orig_dport), str(r.proto))[0],
        "service_via": services.dialled(str(r.orig_dst), int(r.orig_dport), str(r.proto))[1],
        "backend_ip": backend[0],
        "backend_port": backend[1],
        "snat_ip": snat[0],
        "snat_port": snat[1],
        "packets_fwd": 0,
        "packets_rev": 0,
        "bytes_fwd": 0,
        "bytes_rev": 0,
        "conn_state": "",
        "history": "",
        "first_ns": -1,
        "last_ns": -1,
        "path_fwd": "",
        "path_rev": "",
        "verdict": "unobserved",
        "last_seen": "",
        "missing_at": "",
        "peer_redirected": 0,
        "icmp_errors": 0,
        "icmp_error_types": "",
        "ambiguous": 0,
        "ct_state": str(r.state),
        "ct_nat": str(r.nat),
        "hops": 0,
    }
