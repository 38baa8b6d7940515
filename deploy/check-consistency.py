"""Cross-checks the deployment files against each other and against config/default.toml, so that
they cannot drift apart silently. Run by scripts/deploy-check.sh with the LocalStack venv's Python
(it needs cfn-lint's template decoder and Python 3.11's tomllib):

    .localstack-venv/bin/python deploy/check-consistency.py

Checks:
- deploy/iam/*.json grant exactly the actions (per statement id) of the CloudFormation policies
  (intake.yaml's task role included: sqs:SendMessage on the token queue, and KMS when keyed);
- the task trust policy matches the template's;
- the Dockerfile's HEALTHCHECK is the task definition's health check, and its release build is
  `cargo build --release --locked`, the command .ci/run runs;
- the queue visibility timeout defaults equal worker.visibility_timeout_secs, and their minimum is
  exactly the visibility rule of src/config/limits.rs for the default settings; the ECS stop
  timeout exceeds worker.shutdown_grace_secs;
- every MPR_ variable the task definitions set names a configuration key (the keys in PENDING_KEYS
  may be missing from config/default.toml for now: reported `pending`, checked once they exist);
- intake.yaml runs `mp-resolver intake` with the same health check, and its ALB health-checks
  /healthz on the admin port;
- the store table (messaging.yaml StoreTable, which LocalStack cannot create) is the contract of
  docs/deploy.md, "The store": pk (HASH) and sk (RANGE), both S, no indexes, on-demand, TTL on
  expiresAt, point-in-time recovery, SSE, retained on delete and replace; the worker may use
  exactly the store's item actions and DescribeTable, intake GetItem and PutItem, operators only
  reads, each on the table's ARN alone; both task definitions run with MPR_STORE__KIND=dynamodb
  and MPR_STORE__TABLE from StoreTableName;
- the usage queue follows the token queue's rules (visibility timeout, retention, redrive with
  MaxReceiveCount, SSE) and its DLQ keeps 14 days; the front-end sender policy may send to it;
  BatchMeterUsage is granted with the usage lane, and the seller-account Marketplace role
  (deploy/iam/marketplace-role-policy.json) has every aws-marketplace action the worker has;
- the unmetered-hour alarm's default threshold is above [metering] settle_secs and max_delay_secs
  (once those keys exist): it must not fire for an hour the worker is still allowed to wait on.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tomllib
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
failures: list[str] = []
# Configuration keys the templates already set that other work adds to config/default.toml this
# round ([store] kind/table, usage_queue_url, usage_dlq_url). Absent: `pending`, not a failure;
# present: checked like every other key. Empty this set once they have landed.
PENDING_KEYS: set[str] = set()


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def template(name: str):
    tpl, matches = decode(str(DEPLOY / "cloudformation" / name))
    if matches or tpl is None:
        sys.exit(f"cannot parse {name}: {matches}")
    return tpl


def statements(doc) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Sid -> (Effect, sorted actions). A conditional statement counts with its condition true."""
    out = {}
    for st in doc["Statement"]:
        if "Fn::If" in st:
            st = st["Fn::If"][1]
        actions = st["Action"]
        actions = [actions] if isinstance(actions, str) else list(actions)
        out[str(st["Sid"])] = (str(st["Effect"]), tuple(sorted(map(str, actions))))
    return out


def plain(obj):
    """cfn-lint's node classes -> plain JSON values."""
    return json.loads(json.dumps(obj))


messaging = template("messaging.yaml")
service = template("service.yaml")
intake = template("intake.yaml")
defaults = tomllib.loads((ROOT / "config" / "default.toml").read_text())


def iam(name: str):
    return json.loads((DEPLOY / "iam" / name).read_text())


# --- IAM policies -------------------------------------------------------------------------------
task_role = service["Resources"]["TaskRole"]["Properties"]
pairs = [
    ("worker-task-policy.json", "service.yaml TaskRole", task_role["Policies"][0]["PolicyDocument"]),
    (
        "front-end-sender-policy.json",
        "messaging.yaml SenderPolicy",
        messaging["Resources"]["SenderPolicy"]["Properties"]["PolicyDocument"],
    ),
    (
        "intake-task-policy.json",
        "intake.yaml TaskRole",
        intake["Resources"]["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"],
    ),
    (
        "operator-policy.json",
        "messaging.yaml OperatorPolicy",
        messaging["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"],
    ),
]
for file, where, doc in pairs:
    want, got = statements(doc), statements(iam(file))
    check(got == want, f"deploy/iam/{file} grants the same actions as {where}")
    if got != want:
        for sid in sorted(set(want) | set(got)):
            if want.get(sid) != got.get(sid):
                print(f"        {sid}: template {want.get(sid)}  json {got.get(sid)}")

trust_tpl = plain(task_role["AssumeRolePolicyDocument"]["Statement"][0])
trust_json = iam("ecs-task-trust-policy.json")["Statement"][0]
check(
    trust_tpl["Principal"] == trust_json["Principal"]
    and trust_tpl["Action"] == trust_json["Action"]
    and {k: sorted(v) for k, v in trust_tpl["Condition"].items()}
    == {k: sorted(v) for k, v in trust_json["Condition"].items()},
    "deploy/iam/ecs-task-trust-policy.json matches service.yaml TaskRole's trust policy",
)

# --- image ----------------------------------------------------------------------------------------
dockerfile = (DEPLOY / "Dockerfile").read_text()
container = service["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
m = re.search(r"^\s*CMD (\[.*\])\s*$", dockerfile.split("HEALTHCHECK", 1)[1], re.M)
docker_hc = json.loads(m.group(1)) if m else None
check(
    docker_hc is not None and ["CMD", *docker_hc] == list(map(str, container["HealthCheck"]["Command"])),
    "Dockerfile HEALTHCHECK == task definition HealthCheck (mp-resolver healthcheck)",
)
ci = (ROOT / ".ci" / "run").read_text()
docker_code = "\n".join(l for l in dockerfile.splitlines() if not l.lstrip().startswith("#"))
ci_code = "\n".join(l for l in ci.splitlines() if not l.lstrip().startswith("#"))
check(
    # Twice: the dependency layer (stub sources) and the crate.
    docker_code.count("cargo build --release --locked") == 2
    and re.search(r"^cargo build --release --locked$", ci_code, re.M) is not None,
    "Dockerfile builds with `cargo build --release --locked`, as .ci/run does",
)
check(
    re.search(r'^ENTRYPOINT \["/usr/local/bin/mp-resolver"\]$', dockerfile, re.M) is not None
    and container["Command"] == ["run"],
    "exec-form ENTRYPOINT (SIGTERM reaches the binary) and the task runs `mp-resolver run`",
)
check(container["ReadonlyRootFilesystem"] is True, "task definition: read-only root filesystem")

# --- timing -----------------------------------------------------------------------------------------
worker, resolve = defaults["worker"], defaults["resolve"]
# The visibility rule of src/config/limits.rs (budget + one attempt, rounded up, + 10 s margin).
# scripts/deploy-check.sh also asks the binary itself: the minimum is accepted, one less refused.
needed = resolve["budget_secs"] + math.ceil(resolve["attempt_timeout_ms"] / 1000) + 10
for name, tpl in (("messaging.yaml", messaging), ("service.yaml", service)):
    p = tpl["Parameters"]["VisibilityTimeoutSeconds"]
    check(
        int(p["Default"]) == worker["visibility_timeout_secs"] and int(p["MinValue"]) == needed,
        f"{name} VisibilityTimeoutSeconds default {p['Default']} == worker.visibility_timeout_secs"
        f" ({worker['visibility_timeout_secs']}), minimum {p['MinValue']} == budget + attempt + 10 ({needed})",
    )
check(
    int(container["StopTimeout"]) > worker["shutdown_grace_secs"],
    f"ECS StopTimeout {container['StopTimeout']} s > worker.shutdown_grace_secs {worker['shutdown_grace_secs']} s",
)

# --- intake -----------------------------------------------------------------------------------------
intake_container = intake["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
check(
    intake_container["Command"] == ["intake"]
    and list(map(str, intake_container["HealthCheck"]["Command"])) == ["CMD", *docker_hc],
    "intake.yaml runs `mp-resolver intake` with the image's health check",
)
intake_tg = intake["Resources"]["TargetGroup"]["Properties"]
check(
    intake_tg["HealthCheckPath"] == "/healthz"
    and plain(intake_tg["HealthCheckPort"]) == {"Ref": "AdminPort"},
    "intake.yaml target group health-checks /healthz on the admin port",
)
intake_trust = plain(intake["Resources"]["TaskRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0])
check(intake_trust == trust_tpl, "intake.yaml TaskRole trust policy == service.yaml's")
check(
    intake_container["ReadonlyRootFilesystem"] is True
    and int(intake_container["StopTimeout"])
    > int(next(a["Value"] for a in intake_tg["TargetGroupAttributes"] if a["Key"] == "deregistration_delay.timeout_seconds")),
    "intake task: read-only root filesystem; ECS StopTimeout > the ALB deregistration delay",
)

# --- environment ------------------------------------------------------------------------------------
top_level = {k for k, v in defaults.items() if not isinstance(v, dict)}
for var in (str(e["Name"]) for c in (container, intake_container) for e in c["Environment"]):
    if not var.startswith("MPR_"):
        continue
    path = var[4:].lower().split("__")
    if len(path) == 1:
        known = path[0] in top_level
    else:
        section = defaults.get(path[0])
        known = len(path) == 2 and isinstance(section, dict) and path[1] in section
    if not known and ".".join(path) in PENDING_KEYS:
        print(f"pending task definition variable {var}: {'.'.join(path)} is not in config/default.toml yet")
        continue
    check(known, f"task definition variable {var} names a configuration key")

# --- the store ------------------------------------------------------------------------------------------
store = messaging["Resources"]["StoreTable"]
table = plain(store["Properties"])
check(
    sorted((a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]) == [("pk", "S"), ("sk", "S")]
    and [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [("pk", "HASH"), ("sk", "RANGE")]
    and not {"GlobalSecondaryIndexes", "LocalSecondaryIndexes"} & set(table),
    "messaging.yaml StoreTable: key pk (HASH, S) + sk (RANGE, S), no indexes",
)
check(
    table.get("BillingMode") == "PAY_PER_REQUEST"
    and table.get("TimeToLiveSpecification") == {"AttributeName": "expiresAt", "Enabled": True}
    and table.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True
    and table.get("SSESpecification", {}).get("SSEEnabled") is True,
    "messaging.yaml StoreTable: on-demand, TTL on expiresAt, point-in-time recovery, SSE",
)
check(
    store.get("DeletionPolicy") == "Retain" and store.get("UpdateReplacePolicy") == "Retain"
    and store.get("Condition") == "CreateStoreTable",
    "messaging.yaml StoreTable: retained on delete and replace; not created when StoreTableName names one",
)


def dynamodb_statements(doc) -> dict[str, tuple[tuple[str, ...], object]]:
    """Sid -> (sorted dynamodb actions, resource) of the statements granting any dynamodb action."""
    out = {}
    for st in plain(doc)["Statement"]:
        if "Fn::If" in st:
            st = st["Fn::If"][1]
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if any(a.startswith("dynamodb:") for a in actions):
            out[st["Sid"]] = (tuple(sorted(actions)), st["Resource"])
    return out


WORKER_STORE_ACTIONS = tuple(sorted(
    f"dynamodb:{a}"
    for a in ("GetItem", "PutItem", "DeleteItem", "ConditionCheckItem", "Query", "Scan", "DescribeTable")
))
worker_ddb = dynamodb_statements(task_role["Policies"][0]["PolicyDocument"])
check(
    worker_ddb == {"UseStore": (WORKER_STORE_ACTIONS, {"Ref": "StoreTableArn"})},
    "service.yaml TaskRole: the store's item actions (TransactWriteItems = its Put/Delete/"
    "ConditionCheck) and DescribeTable, on the table's ARN only",
)
intake_ddb = dynamodb_statements(intake["Resources"]["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"])
check(
    intake_ddb == {"RecordSignups": (("dynamodb:GetItem", "dynamodb:PutItem"), {"Ref": "StoreTableArn"})},
    "intake.yaml TaskRole: GetItem and PutItem on the store table's ARN only",
)
operator_ddb = dynamodb_statements(messaging["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"])
READS = {"dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:BatchGetItem"}
check(
    list(operator_ddb) == ["ReadStore"] and set(operator_ddb["ReadStore"][0]) <= READS
    and "Fn::If" in operator_ddb["ReadStore"][1],
    "messaging.yaml OperatorPolicy: reads only, on the store table (created or named)",
)
for where, c in (("service.yaml", container), ("intake.yaml", intake_container)):
    env = {str(e["Name"]): plain(e["Value"]) for e in c["Environment"]}
    check(
        env.get("MPR_STORE__KIND") == "dynamodb" and env.get("MPR_STORE__TABLE") == {"Ref": "StoreTableName"},
        f"{where} task: MPR_STORE__KIND=dynamodb, MPR_STORE__TABLE from StoreTableName",
    )

# --- the usage lane ---------------------------------------------------------------------------------
res = messaging["Resources"]
token_q, usage_q = plain(res["TokenQueue"]["Properties"]), plain(res["UsageQueue"]["Properties"])
same = ("VisibilityTimeout", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds", "SqsManagedSseEnabled",
        "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds")
check(
    all(usage_q.get(k) == token_q.get(k) for k in same)
    and usage_q["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["UsageDeadLetterQueue", "Arn"]},
                                     "maxReceiveCount": {"Ref": "MaxReceiveCount"}}
    and plain(res["UsageDeadLetterQueue"]["Properties"])["MessageRetentionPeriod"] == 1209600,
    "messaging.yaml UsageQueue: the token queue's visibility, retention and SSE, redrive to its "
    "14-day DLQ after MaxReceiveCount",
)
sender = plain(res["SenderPolicy"]["Properties"]["PolicyDocument"])["Statement"]
check(
    any(st.get("Sid") == "SendUsage" and st["Resource"] == {"Fn::GetAtt": ["UsageQueue", "Arn"]}
        and "sqs:SendMessage" in st["Action"] for st in sender),
    "messaging.yaml SenderPolicy: the seller's application may send to the usage queue",
)
worker_actions = {a for _, acts in statements(task_role["Policies"][0]["PolicyDocument"]).values() for a in acts}
worker_statements = plain(task_role["Policies"][0]["PolicyDocument"])["Statement"]
check(
    any("Fn::If" in st and st["Fn::If"][0] == "HasUsageQueue" and st["Fn::If"][1]["Action"] == "aws-marketplace:BatchMeterUsage"
        for st in worker_statements),
    "service.yaml TaskRole: aws-marketplace:BatchMeterUsage with the usage lane (HasUsageQueue) only",
)
mp_role_actions = {a for _, acts in statements(iam("marketplace-role-policy.json")).values() for a in acts}
missing = sorted(a for a in worker_actions if a.startswith("aws-marketplace:") and a not in mp_role_actions)
check(
    not missing,
    "deploy/iam/marketplace-role-policy.json has every aws-marketplace action of the worker's role"
    + (f" (missing {missing})" if missing else ""),
)
alarm_default = int(service["Parameters"]["UnmeteredHourAlarmSeconds"]["Default"])
metering = defaults.get("metering")
if not isinstance(metering, dict) or not {"settle_secs", "max_delay_secs"} <= set(metering):
    print("pending UnmeteredHourAlarmSeconds vs [metering] settle_secs/max_delay_secs: not in config/default.toml yet")
else:
    check(
        alarm_default > metering["settle_secs"] and alarm_default > metering["max_delay_secs"],
        f"UnmeteredHourAlarmSeconds default {alarm_default} > [metering] settle_secs ({metering['settle_secs']})"
        f" and max_delay_secs ({metering['max_delay_secs']})",
    )

if failures:
    print(f"\n{len(failures)} consistency check(s) failed", file=sys.stderr)
    sys.exit(1)
