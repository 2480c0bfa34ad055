"""Coverage-guided fuzzing of the readers with atheris (libFuzzer for Python), beyond the seeded
cases CI runs (tests/test_fuzz.py, tests/test_capture_fuzz.py).

    .venv/bin/pip install atheris && .venv/bin/python bench/fuzz_atheris.py -max_total_time=600

The first byte of each input picks the reader: a capture (pcap or pcapng, indexed and decoded), or
one of the text parsers (the rest of the input as lines). A crash is any exception: readers report
damage as anomaly rows, they never raise. libFuzzer options (-runs, -max_total_time, a corpus
folder) are passed through.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import pandas as pd

    from calforensics.anomalies import AnomalyLog
    from calforensics.ingest.parsers import (
        calico_bpf,
        conntrack,
        crictl,
        flowlogs,
        iproute,
        ipset,
        iptables,
        ipvs,
        kubectl,
        nft,
        platform,
        resources,
        sysctl,
        traces,
    )
    from calforensics.ingest.parsers.packets import decode_frames
    from calforensics.ingest.parsers.pcap import read_frames

TEXT = [
    conntrack.parse_conntrack,
    iptables.parse_iptables_save,
    nft.parse_nft_ruleset,
    iproute.parse_ip_link,
    iproute.parse_ip_route,
    sysctl.parse_sysctls,
    calico_bpf.parse_bpf_conntrack,
    calico_bpf.parse_bpf_nat,
    calico_bpf.parse_bpf_routes,
    calico_bpf.parse_bpf_counters,
    calico_bpf.parse_bpf_ifstate,
    calico_bpf.parse_bpf_policy,
    traces.parse_traces,
    kubectl.parse_pod_listing,
    kubectl.parse_service_listing,
    kubectl.parse_endpoint_listing,
    kubectl.parse_node_listing,
    kubectl.parse_pool_listing,
    kubectl.parse_policy_listing,
    platform.parse_platform_evidence,
    ipvs.parse_ipvsadm,
    flowlogs.parse_flow_logs,
    ipset.parse_ipset,
    resources.parse_pod_resources,
    resources.parse_service_resources,
    resources.parse_policy_resources,
    resources.parse_pool_resources,
    resources.parse_endpoint_resources,
    resources.parse_node_resources,
    crictl.parse_crictl_inspect,
]


def one_input(data: bytes) -> None:
    if not data:
        return
    pick, rest = data[0] % (len(TEXT) + 1), data[1:]
    log = AnomalyLog("fuzz", "input")
    if pick == len(TEXT):
        frames = read_frames(rest, log)
        assert isinstance(decode_frames(frames), pd.DataFrame)
    else:
        lines = rest.decode("utf-8", "replace").splitlines()
        assert isinstance(TEXT[pick](lines, log), pd.DataFrame)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
