"""What a bundle says about the software that ran: Calico's version, Felix's settings and
kube-proxy's mode, as evidence lines from cluster resources, pod descriptions and logs.

Read line by line from any text form (`-o yaml`, `-o json`, `kubectl describe`, logs), since the
same facts come in all of them:

- `calicoVersion: v3.28.0` — ClusterInformation (`cluster/crd/clusterinformations…`), which
  Calico's controllers keep at the running release;
- `calico/node:v3.28.0` — the image of calico-node pods (pod, DaemonSet and describe listings);
  Calico Enterprise's `tigera/cnx-node` numbers its releases differently and is not read;
- `Felix starting up … version="v3.28.0"` — Felix's first log line (felix/daemon/daemon.go), unless
  it says `release="CNX"` (Enterprise);
- `Cluster Calico Version: v3.28.0` — `calicoctl version`;
- Felix settings: FelixConfiguration fields (`bpfEnabled`, `bpfRedirectToPeer`, `nftablesMode`,
  the tunnel MTUs `vxlanMTU`/`ipipMTU`/`wireguardMTU`[`V6`], `chainInsertMode`, `iptablesBackend`),
  their `FELIX_*` environment forms, the operator's `linuxDataplane` and `calicoNetwork.mtu`, and
  the manifests' `veth_mtu` (calico-config);
- kube-proxy's mode: its KubeProxyConfiguration's `mode:` (the kube-proxy ConfigMap; empty means
  iptables on Linux) and its `Using <mode> Proxier` log line (cmd/kube-proxy/app/server_linux.go).
"""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame

VERSION = r"v?(\d+\.\d+(?:\.\d+)?)"
CALICO_VERSION = [
    ("ClusterInformation calicoVersion", re.compile(r'\bcalicoVersion\\?"?\s*:\s*\\?"?' + VERSION)),
    ("calico/node image", re.compile(r"(?<![\w-])calico/node:" + VERSION + r"\b")),
    ("calicoctl version", re.compile(r"^\s*Cluster Calico Version:\s*" + VERSION)),
]
FELIX_START = re.compile(r"Felix starting up\b.*\bversion=\\?\"?" + VERSION)
# FelixConfiguration fields read, and their FELIX_* environment names where they differ (felix/config
# config_params.go: the environment name is the parameter's name upper-cased, IpInIpMtu for ipipMTU)
FELIX_FIELDS = [
    "bpfEnabled",
    "bpfRedirectToPeer",
    "nftablesMode",
    "linuxDataplane",
    "vxlanMTU",
    "vxlanMTUV6",
    "ipipMTU",
    "wireguardMTU",
    "wireguardMTUV6",
    "chainInsertMode",
    "iptablesBackend",
]
FELIX_SETTINGS = {f.lower(): f for f in FELIX_FIELDS} | {"ipinipmtu": "ipipMTU"}  # env name -> field
_ENVS = "|".join(sorted({k.upper() for k in FELIX_SETTINGS if k != "linuxdataplane"}))
SETTING = re.compile(r'^\s*-?\s*"?(' + "|".join(FELIX_FIELDS) + r')"?\s*:\s*"?([\w-]+)"?\s*,?\s*$')
ENV_INLINE = re.compile(r"^\s*(FELIX_(?:" + _ENVS + r"))\s*[:=]\s*\"?([\w-]+)\"?\s*$", re.I)
ENV_NAME = re.compile(r'^\s*-?\s*"?name"?\s*:\s*"?(FELIX_(?:' + _ENVS + r'))"?\s*,?\s*$', re.I)
# a FelixConfiguration named node.<node> holds that node's own settings, over `default`'s
NODE_CONFIG_NAME = re.compile(r'^\s*"?name"?\s*:\s*"?node\.([\w.-]+?)"?\s*,?\s*$')
DOCUMENT_START = re.compile(r'^(?:---|\s*-?\s*"?apiVersion"?\s*:)')
# the MTU Calico's manifests give every pod veth (calico-config ConfigMap) and the operator's Installation
VETH_MTU = re.compile(r'^\s*"?veth_mtu"?\s*:\s*"?(\d+)"?\s*,?\s*$')
INSTALLATION_MTU = re.compile(r'^\s*"?mtu"?\s*:\s*(\d+)\s*,?\s*$')
ENV_VALUE = re.compile(r'^\s*"?value"?\s*:\s*"?([\w-]+)"?\s*,?\s*$')
KUBE_PROXY_CONFIG = "kubeproxy.config.k8s.io"
PROXY_MODE_LINE = re.compile(r'^\s*mode:\s*"?(\w*)"?\s*$')
PROXY_MODE_ESCAPED = re.compile(r'\\nmode:\s*(?:\\")?(\w*)(?:\\")?\\n')  # inside a JSON string
PROXIER_LOG = re.compile(r"Using (iptables|ipvs|nftables|kernelspace|userspace) Proxier")
MARKERS = re.compile(
    r"calicoVersion|calico/node:v|Felix starting up|Cluster Calico Version|FelixConfiguration|bpfRedirectToPeer|"
    r"FELIX_BPF|KubeProxyConfiguration|kubeproxy\.config\.k8s\.io|Proxier|linuxDataplane|veth_mtu|FELIX_\w*MTU"
)


def looks_like_platform(lines: list[str]) -> bool:
    """A file that states a version, a Felix setting or kube-proxy's mode near its start."""
    return any(MARKERS.search(x) for x in lines[:400])


def parse_platform_evidence(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """One row per statement found: kind (calico_version, felix_setting, kube_proxy_mode), what said
    it, and the value. Everything else in the file is not this parser's to read and is passed over."""
    rows: list[dict] = []
    proxy_config = any(KUBE_PROXY_CONFIG in x or "KubeProxyConfiguration" in x for x in lines)
    installation = any(re.search(r'"?kind"?\s*:\s*"?Installation\b', x) for x in lines)
    pending_env = ""
    scope = ""  # the node a per-node FelixConfiguration (`node.<name>`) is for
    for no, raw in enumerate(lines, 1):
        line = raw[:4096]
        if DOCUMENT_START.match(line):
            scope = ""
        m = NODE_CONFIG_NAME.match(line)
        if m:
            scope = m.group(1)
        for what, pattern in CALICO_VERSION:
            for m in pattern.finditer(line):
                rows.append(_row(no, "calico_version", what, "v" + m.group(1)))
        m = FELIX_START.search(line)
        if m and 'release="CNX"' not in line and 'release=\\"CNX' not in line:
            rows.append(_row(no, "calico_version", "Felix starting up", "v" + m.group(1)))
        m = SETTING.match(line)
        if m:
            rows.append(_row(no, "felix_setting", m.group(1), m.group(2), scope))
        m = VETH_MTU.match(line) or (INSTALLATION_MTU.match(line) if installation else None)
        if m:
            said = "veth_mtu" if "veth_mtu" in line else "calicoNetwork.mtu"
            rows.append(_row(no, "felix_setting", said, m.group(1)))
        m = ENV_INLINE.match(line)
        if m:
            rows.append(_row(no, "felix_setting", _env_setting(m.group(1)), m.group(2)))
        if pending_env:
            m = ENV_VALUE.match(line)
            if m:
                rows.append(_row(no, "felix_setting", _env_setting(pending_env), m.group(1)))
            pending_env = ""
        m = ENV_NAME.match(line)
        if m:
            pending_env = m.group(1)
        if proxy_config:
            m = PROXY_MODE_LINE.match(line) or PROXY_MODE_ESCAPED.search(line)
            if m:
                rows.append(_row(no, "kube_proxy_mode", "KubeProxyConfiguration mode", m.group(1) or "iptables"))
        m = PROXIER_LOG.search(line)
        if m:
            rows.append(_row(no, "kube_proxy_mode", "kube-proxy log", m.group(1)))
    return table_frame(rows, "platform_evidence", node, artifact)


def _env_setting(env: str) -> str:
    return FELIX_SETTINGS.get(env.upper().removeprefix("FELIX_").lower(), env)


def _row(line: int, kind: str, what: str, value: str, scope: str = "") -> dict:
    return {"line": line, "kind": kind, "said_by": what, "value": value, "scope": scope}
