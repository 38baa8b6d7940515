"""Checks that every metric of the worker's namespace that a dashboard widget or an alarm of the
templates names is one `run` or `intake` emits, with the dimensions it emits it with, and that each
dashboard body is valid JSON. Run by scripts/deploy-check.sh with the LocalStack venv's Python
(it needs cfn-lint's template decoder), fed the worker's own list:

    target/debug/mp-resolver metrics | .localstack-venv/bin/python deploy/check-metrics.py

`mp-resolver metrics` prints `name<TAB>kind<TAB>unit<TAB>label,names`; the worker writes each
metric with the dimensions Service, QueueName and then its labels (src/observe/emf.rs). Counters
are named without the `_total` that /metrics (OpenMetrics) adds: `mpr_outcomes` in CloudWatch is
`mpr_outcomes_total` on /metrics.

Conditional parts: a dashboard body is rendered once per combination of the conditions its
Fn::If's name (each rendering must be valid JSON), and every metric of every rendering is
checked. Alarms and dashboard parts behind a condition of LANES (a feature that is on only when
configured, e.g. the usage lane behind HasUsageQueue) get one allowance: while the binary emits no
metric with the lane's prefix at all, their metrics are reported as `pending` instead of failing.
As soon as `mp-resolver metrics` lists one metric of the lane, every use of the lane is checked
like any other (name and dimensions). Once the lane's metrics have landed, delete its LANES entry
so that losing them fails again.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "deploy" / "cloudformation").glob("*.yaml"))
CONFIGURED = ["Service", "QueueName"]
# Condition -> the prefix of the metrics the lane adds (see the docstring).
LANES: dict[str, str] = {}
failures: list[str] = []
checked: list[str] = []
pending: list[str] = []


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


# The lane (condition) the use being checked sits behind, if any; set by the loops below.
current_lanes: set[str] = set()


def lane_pending(name: str) -> bool:
    """True when `name` sits behind a lane whose metrics the binary does not emit at all yet."""
    for cond in current_lanes:
        prefix = LANES[cond]
        if name.startswith(prefix) and not any(m.startswith(prefix) for m in emitted):
            return True
    return False


def metric(where: str, name: str, dimensions: list[str] | None) -> None:
    """A metric of the worker's namespace, named at `where`, with these dimension names."""
    if name not in emitted and lane_pending(name):
        pending.append(f"{where}: {name} (behind {', '.join(sorted(current_lanes))})")
        return
    checked.append(f"{where}: {name}")
    if name not in emitted:
        check(False, f"{where}: {name} is not a metric the worker emits")
    elif dimensions is not None:
        check(
            sorted(dimensions) == sorted(emitted[name]),
            f"{where}: {name} with dimensions {dimensions}; the worker writes {emitted[name]}",
        )


def render(node, params: dict, conds: dict[str, bool]) -> str:
    """A string-valued template expression as text: Fn::Sub with its variables (a variable of
    the Sub's own map rendered in turn, a parameter by its default, anything else by a
    placeholder; ${!...} is a literal), Fn::If by the branch `conds` picks."""
    if isinstance(node, dict) and "Fn::Sub" in node:
        sub = node["Fn::Sub"]
        text, variables = (sub[0], sub[1]) if isinstance(sub, list) else (sub, {})

        def value(m: re.Match) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return render(variables[name], params, conds)
            if name in params and "Default" in params[name]:
                return str(params[name]["Default"])
            return "X-" + name

        return re.sub(r"\$\{([^}]+)\}", value, str(text))
    if isinstance(node, dict) and "Fn::If" in node:
        cond, yes, no = node["Fn::If"]
        return render(yes if conds.get(str(cond), True) else no, params, conds)
    if isinstance(node, dict) and list(node) == ["Ref"] and str(node["Ref"]) in params:
        return str(params[str(node["Ref"])].get("Default", "X-" + str(node["Ref"])))
    if isinstance(node, dict):
        return "X-" + "-".join(node)
    return str(node)


def if_conditions(node) -> set[str]:
    """The conditions every Fn::If inside `node` names."""
    found: set[str] = set()
    if isinstance(node, dict):
        if "Fn::If" in node:
            found.add(str(node["Fn::If"][0]))
        for v in node.values():
            found |= if_conditions(v)
    elif isinstance(node, list):
        for v in node:
            found |= if_conditions(v)
    return found


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
        if name not in emitted and not lane_pending(name):
            check(False, f"{where}: expression names {name}, which the worker does not emit")


def widgets(where: str, items: list, namespace: str, start: int = 0) -> None:
    for i, widget in enumerate(items, start):
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


def plain(obj):
    """cfn-lint's node classes -> plain JSON values."""
    return json.loads(json.dumps(obj))


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
        current_lanes = {str(res["Condition"])} & set(LANES) if "Condition" in res else set()
        if res.get("Type") == "AWS::CloudWatch::Dashboard":
            body = plain(props["DashboardBody"])
            names = sorted(if_conditions(body))
            seen: set[str] = set()
            # Every combination of the body's conditions; the lanes' metrics count as behind
            # their lane when they appear only with it on.
            for values in itertools.product([False, True], repeat=len(names)):
                conds = dict(zip(names, values))
                on = {c for c, v in conds.items() if v}
                label = where + (f" [{', '.join(f'{c}={conds[c]}' for c in names)}]" if names else "")
                try:
                    parsed = json.loads(render(body, params, conds))
                except json.JSONDecodeError as e:
                    check(False, f"{label}: DashboardBody is not valid JSON: {e}")
                    continue
                # Metrics: from the renderings with every condition that is not a lane's on
                # (the others only change values such as the cluster's name).
                if not all(v for c, v in conds.items() if c not in LANES):
                    continue
                for i, widget in enumerate(parsed.get("widgets", [])):
                    key = json.dumps(widget, sort_keys=True)
                    if key in seen:
                        continue
                    seen.add(key)
                    # A widget that is not there with every lane off is behind the lanes on.
                    off = {c: (False if c in LANES else v) for c, v in conds.items()}
                    base = json.loads(render(body, params, off)).get("widgets", [])
                    current_lanes = set() if widget in base else (on & set(LANES))
                    widgets(where, [widget], namespace, i)
            current_lanes = set()
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
for line in pending:
    print("pending " + line + ": the binary emits no metric of this lane yet")
if len(checked) < 10:
    failures.append(f"only {len(checked)} uses of the worker's metrics found; is the dashboard there?")
if failures:
    print(f"\n{len(failures)} dashboard/alarm metric check(s) failed", file=sys.stderr)
    sys.exit(1)
print(f"ok    {len(checked)} uses of {len(emitted)} emitted metrics: every one is emitted, with its dimensions")
