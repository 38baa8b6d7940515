"""Checks that every metric of the worker's namespace that a dashboard widget or an alarm of the
templates names is one `run` or `intake` emits, with the dimensions it emits it with, and that each
dashboard body is valid JSON. Run by scripts/deploy-check.sh with the LocalStack venv's Python
(it needs cfn-lint's template decoder), fed the worker's own list:

    target/debug/mp-resolver metrics | .localstack-venv/bin/python deploy/check-metrics.py

`mp-resolver metrics` prints `name<TAB>kind<TAB>unit<TAB>label,names`; the worker writes each
metric with the dimensions Service, QueueName and then its labels (src/observe/emf.rs).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "deploy" / "cloudformation").glob("*.yaml"))
CONFIGURED = ["Service", "QueueName"]
failures: list[str] = []
checked: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        print("FAIL  " + what)
        failures.append(what)


emitted: dict[str, list[str]] = {}
for line in sys.stdin.read().splitlines():
    parts = line.split("\t")
    if len(parts) == 4:
        emitted[parts[0]] = CONFIGURED + [p for p in parts[3].split(",") if p]
if len(emitted) < 10:
    sys.exit(f"expected the output of `mp-resolver metrics` on standard input, got {len(emitted)} metrics")


def metric(where: str, name: str, dimensions: list[str] | None) -> None:
    """A metric of the worker's namespace, named at `where`, with these dimension names."""
    checked.append(f"{where}: {name}")
    if name not in emitted:
        check(False, f"{where}: {name} is not a metric the worker emits")
    elif dimensions is not None:
        check(
            sorted(dimensions) == sorted(emitted[name]),
            f"{where}: {name} with dimensions {dimensions}; the worker writes {emitted[name]}",
        )


def substitute(sub, namespace_default: str) -> str:
    """A Fn::Sub body with its variables replaced: the namespace by its default, others by a
    placeholder (every ${...} is a variable; ${!...} is a literal)."""
    text = sub[0] if isinstance(sub, list) else sub

    def value(m: re.Match) -> str:
        if m.group(1).startswith("!"):
            return "${" + m.group(1)[1:] + "}"
        return namespace_default if m.group(1) == "MetricsNamespace" else "X-" + m.group(1)

    return re.sub(r"\$\{([^}]+)\}", value, str(text))


def expressions(where: str, expr: str, namespace: str) -> None:
    # SEARCH('{Namespace,Dim,...} MetricName="name" ...')
    for schema, name in re.findall(r"\{([^}]*)\}[^']*?MetricName=\"([^\"]+)\"", expr):
        ns, *dims = [d.strip() for d in schema.split(",")]
        if ns == namespace:
            metric(where, name, dims)
    # Metrics Insights: SELECT FN(name) FROM SCHEMA("Namespace", Dim, ...)
    for name, ns, dims in re.findall(r"SELECT\s+\w+\((\w+)\)\s+FROM\s+SCHEMA\(\"([^\"]+)\"((?:\s*,\s*\w+)*)\)", expr):
        if ns == namespace:
            metric(where, name, [d.strip() for d in dims.split(",") if d.strip()])
    # Anything else that looks like one of the worker's metric names.
    for name in re.findall(r"\bmpr_\w+", expr):
        if name not in emitted:
            check(False, f"{where}: expression names {name}, which the worker does not emit")


def widgets(where: str, items: list, namespace: str) -> None:
    for i, widget in enumerate(items):
        props = widget.get("properties", {})
        title = f"{where} widget {i} ({props.get('title', widget.get('type'))})"
        previous: list = []
        for row in props.get("metrics", []):
            if row and isinstance(row[0], dict):
                expressions(title, row[0].get("expression", ""), namespace)
                continue
            plain = [v for v in row if not isinstance(v, dict)]
            # "." repeats the value of the row before.
            plain = [previous[j] if v == "." and j < len(previous) else v for j, v in enumerate(plain)]
            previous = plain
            if len(plain) >= 2 and plain[0] == namespace:
                metric(title, plain[1], plain[2::2])


for path in TEMPLATES:
    tpl, matches = decode(str(path))
    if matches or tpl is None:
        sys.exit(f"cannot parse {path.name}: {matches}")
    params = tpl.get("Parameters", {})
    if "MetricsNamespace" not in params:
        continue
    namespace = str(params["MetricsNamespace"]["Default"])
    ns_ref = {"Ref": "MetricsNamespace"}
    for logical, res in tpl.get("Resources", {}).items():
        props = res.get("Properties", {})
        where = f"{path.name} {logical}"
        if res.get("Type") == "AWS::CloudWatch::Dashboard":
            body = props["DashboardBody"]
            text = substitute(body["Fn::Sub"], namespace) if isinstance(body, dict) else str(body)
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as e:
                check(False, f"{where}: DashboardBody is not valid JSON: {e}")
                continue
            widgets(where, parsed.get("widgets", []), namespace)
        elif res.get("Type") == "AWS::CloudWatch::Alarm":
            stats = [props] + [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]
            for stat in stats:
                if stat.get("Namespace") in (ns_ref, namespace):
                    dims = [str(d["Name"]) for d in stat.get("Dimensions", [])]
                    metric(where, str(stat["MetricName"]), dims)
            for m in props.get("Metrics", []):
                expressions(where, str(m.get("Expression", "")), namespace)

for line in checked:
    print("ok    " + line if not any(line in f for f in failures) else "      " + line)
if len(checked) < 10:
    failures.append(f"only {len(checked)} uses of the worker's metrics found; is the dashboard there?")
if failures:
    print(f"\n{len(failures)} dashboard/alarm metric check(s) failed", file=sys.stderr)
    sys.exit(1)
print(f"ok    {len(checked)} uses of {len(emitted)} emitted metrics: every one is emitted, with its dimensions")
