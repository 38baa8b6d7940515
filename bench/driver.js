#!/usr/bin/env node
// The benchmark driver: measures mp-resolver and the sqs-consumer baseline (bench/baseline) against
// one LocalStack and one Marketplace Metering emulator, interleaving their runs, and writes the
// figures as JSON and as the Markdown block that scripts/bench.sh puts into BENCHMARKS.md.
// Run it through scripts/bench.sh, which provides LocalStack and the release binary.
//
// Usage: node bench/driver.js [--quick] [--runs N] [--tokens N] [--only LIST] [--out DIR]
//   --quick     1 run of each, 2,000 tokens, shorter windows (a smoke test of the harness)
//   --runs N    runs per figure (default 3; the median is reported)
//   --tokens N  tokens per throughput run (default 10,000)
//   --only LIST comma-separated subset of: startup,throughput,rss,latency,goodput,usage
//   --out DIR   where results.json, report.md and the processes' logs go (default target/bench)
// Environment (set by scripts/bench.sh): BENCH_LOCALSTACK (endpoint), BENCH_LOCALSTACK_PID,
// BENCH_BIN (the mp-resolver binary).
//
// Every wait is bounded; every process it starts is stopped by PID, also on Ctrl-C.

"use strict";

const fs = require("node:fs");
const os = require("node:os");
const net = require("node:net");
const path = require("node:path");
const { spawn, execFileSync } = require("node:child_process");
const { performance } = require("node:perf_hooks");
const {
  SQSClient,
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  SendMessageCommand,
  SendMessageBatchCommand,
  ReceiveMessageCommand,
  DeleteMessageBatchCommand,
} = require("@aws-sdk/client-sqs");
const {
  SNSClient,
  CreateTopicCommand,
  DeleteTopicCommand,
  SubscribeCommand,
  PublishCommand,
  PublishBatchCommand,
} = require("@aws-sdk/client-sns");

const ROOT = path.resolve(__dirname, "..");
const REGION = "us-east-1";
const CREDS = { accessKeyId: "test", secretAccessKey: "test" };

// ---------------------------------------------------------------------------------------------
// options

function parseArgs(argv) {
  const o = { quick: false, runs: 3, tokens: 10_000, only: null, out: path.join(ROOT, "target/bench") };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--quick") o.quick = true;
    else if (a === "--runs") o.runs = positiveInt(val(), a);
    else if (a === "--tokens") o.tokens = positiveInt(val(), a);
    else if (a === "--only") o.only = new Set(val().split(",").map((s) => s.trim()).filter(Boolean));
    else if (a === "--out") o.out = path.resolve(val());
    else throw new Error(`unknown argument ${a}`);
  }
  if (o.quick) {
    if (!argv.includes("--runs")) o.runs = 1;
    if (!argv.includes("--tokens")) o.tokens = 2_000;
  }
  const known = ["startup", "throughput", "newtask", "hot", "rss", "latency", "goodput", "usage"];
  for (const s of o.only || []) if (!known.includes(s)) throw new Error(`unknown scenario ${s}`);
  return o;
}

function positiveInt(s, name) {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`);
  return n;
}

const OPT = parseArgs(process.argv.slice(2));
const LS = mustEnv("BENCH_LOCALSTACK");
const LS_PID = Number(process.env.BENCH_LOCALSTACK_PID || 0) || null;
const BIN = mustEnv("BENCH_BIN");
// Optional: moto's DynamoDB for the `dynamodb` store's figures, and its pid for its CPU share.
const DYNAMO = process.env.BENCH_DYNAMODB || null;
const DYNAMO_PID = Number(process.env.BENCH_DYNAMODB_PID || 0) || null;
const DYNAMO_TABLE = "mpr-bench-store";
// The usage run's own table: moto scans a table's items in Python, and on the one the throughput
// runs had grown its usage run stalled (no event counted within a minute) in every full run until
// 2026-12-07.
const DYNAMO_USAGE_TABLE = "mpr-bench-usage";
const BASELINE = path.join(__dirname, "baseline/worker.js");
const WORKDIR = OPT.out; // cwd of the workers: no config/default.toml there, defaults only
fs.mkdirSync(path.join(OPT.out, "logs"), { recursive: true });

// Settings of the scenarios; --quick shortens the windows.
const S = {
  startupRuns: OPT.quick ? 2 : 3,
  idleSettleMs: 5_000,
  throughputTimeoutS: 900,
  ceilingLoops: 32,
  rssTokens: OPT.quick ? 1_000 : 3_000,
  rssEmulatorLatencyMs: 1_000,
  latencyWarmS: OPT.quick ? 3 : 5,
  latencyMeasureS: OPT.quick ? 8 : 15,
  latencyReaders: 4,
  goodputQuota: 20,
  goodputTokens: OPT.quick ? 800 : 1_500,
  goodputWindowS: OPT.quick ? 20 : 30,
  // A new task on a backlog: the baseline, ours from the configured start, ours from the fleet's
  // learned rate.
  newTaskTokens: 2_000,
  // Hot tokens: 5% of the backlog throttled 8 times each.
  hotTokens: 2_000,
  hotShare: 0.05,
  // Our worker with the rate limit started high (rate_limit.initial_per_sec), in the throughput
  // runs only: it shows what the rate limit's slow start from 10 calls/s costs.
  warmRate: 1000,
  // The usage lane: events on the usage queue before the worker starts, all in the last hour,
  // spread over usageSubscriptions × 2 dimensions (1,000 records: BatchMeterUsage calls per 1,000).
  usageEvents: OPT.quick ? 5_000 : 20_000,
  usageDynamoEvents: OPT.quick ? 2_000 : 5_000,
  usageSubscriptions: 500,
  usageSettleS: 5,
  // moto answers one request at a time, so one partition's events are further apart there: a
  // settle shorter than the ingest would meter hours early and (rightly) carry the rest.
  usageDynamoSettleS: 60,
  usageTimeoutS: 600,
};

// ---------------------------------------------------------------------------------------------
// small helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now(); // ms, monotonic
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;

function mustEnv(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is not set; run scripts/bench.sh`);
    process.exit(2);
  }
  return v;
}

function log(...args) {
  console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...args);
}

function median(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** CPU seconds (user + system, all threads) of a live process. */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** VmRSS and VmHWM of a live process, in MiB. */
function memory(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key) => Number((status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m")) || [])[1]);
  return { rssMiB: kb("VmRSS") / 1024, hwmMiB: kb("VmHWM") / 1024 };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function httpJson(url, init = {}) {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${init.method || "GET"} ${url}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

function goodToken(i, tag) {
  const json = JSON.stringify({ account: "123456789012", product: "prod-abc", customer: `c-${tag}-${i}` });
  return `emu1.${Buffer.from(json).toString("base64url")}`;
}

/** A good token the emulator throttles `throttle` times before it answers (a hot token). */
function hotToken(i, tag, throttle) {
  const json = JSON.stringify({ account: "123456789012", product: "prod-abc", customer: `c-${tag}-${i}`, throttle });
  return `emu1.${Buffer.from(json).toString("base64url")}`;
}

function tokenBody(i, tag, context = {}, token = goodToken(i, tag)) {
  return JSON.stringify({
    registrationToken: token,
    signupId: `signup-${tag}-${i}`,
    context: { plan: "team", ...context },
  });
}

// ---------------------------------------------------------------------------------------------
// processes: every child is tracked and stopped by PID

const children = new Set();

function startProcess(name, cmd, args, env, { pipeStdout = false } = {}) {
  const logPath = path.join(OPT.out, "logs", `${name}.log`);
  const logFd = fs.openSync(logPath, "w");
  const child = spawn(cmd, args, {
    cwd: WORKDIR,
    env,
    stdio: ["ignore", pipeStdout ? "pipe" : logFd, logFd],
  });
  fs.closeSync(logFd);
  children.add(child);
  child.exited = new Promise((resolve) =>
    child.on("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  child.logPath = logPath;
  return child;
}

async function stopProcess(child, graceMs = 15_000) {
  if (!children.has(child)) return child.exited;
  child.kill("SIGTERM");
  const done = await Promise.race([child.exited, sleep(graceMs).then(() => null)]);
  if (done) return done;
  log(`pid ${child.pid} did not stop within ${graceMs} ms; sending SIGKILL`);
  child.kill("SIGKILL");
  return child.exited;
}

function killAllChildren() {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
}
process.on("SIGINT", () => {
  killAllChildren();
  process.exit(130);
});
process.on("SIGTERM", () => {
  killAllChildren();
  process.exit(143);
});
process.on("exit", killAllChildren);

function baseEnv() {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME || "/tmp",
    AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
    AWS_ENDPOINT_URL: LS,
    AWS_ENDPOINT_URL_MARKETPLACE_METERING: EMU.url,
    // An experiment's setting for every process of the run: BENCH_ENV_X=v reaches it as X=v.
    ...Object.fromEntries(
      Object.entries(process.env)
        .filter(([k]) => k.startsWith("BENCH_ENV_"))
        .map(([k, v]) => [k.slice("BENCH_ENV_".length), v]),
    ),
  };
}

// ---------------------------------------------------------------------------------------------
// AWS side of the driver

const sqs = new SQSClient({ region: REGION, endpoint: LS, credentials: CREDS });
const sns = new SNSClient({ region: REGION, endpoint: LS, credentials: CREDS });
let pipelineSeq = 0;

/** A token queue with its dead-letter queue, a topic and a raw-delivery subscriber queue. */
async function createPipeline(tag) {
  const name = `bench-${process.pid}-${++pipelineSeq}-${tag}`;
  const dlq = await sqs.send(new CreateQueueCommand({ QueueName: `${name}-dlq` }));
  const dlqArn = await queueArn(dlq.QueueUrl);
  const q = await sqs.send(
    new CreateQueueCommand({
      QueueName: name,
      Attributes: {
        VisibilityTimeout: "60",
        RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: "5" }),
      },
    }),
  );
  const topic = await sns.send(new CreateTopicCommand({ Name: `${name}-events` }));
  const sub = await sqs.send(new CreateQueueCommand({ QueueName: `${name}-subscriber` }));
  await sns.send(
    new SubscribeCommand({
      TopicArn: topic.TopicArn,
      Protocol: "sqs",
      Endpoint: await queueArn(sub.QueueUrl),
      Attributes: { RawMessageDelivery: "true" },
    }),
  );
  return { name, queueUrl: q.QueueUrl, dlqUrl: dlq.QueueUrl, topicArn: topic.TopicArn, subUrl: sub.QueueUrl };
}

async function destroyPipeline(p) {
  for (const url of [p.queueUrl, p.dlqUrl, p.subUrl]) {
    await sqs.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
  }
  await sns.send(new DeleteTopicCommand({ TopicArn: p.topicArn })).catch(() => {});
}

async function queueArn(url) {
  const r = await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["QueueArn"] }));
  return r.Attributes.QueueArn;
}

async function queueDepth(url) {
  const r = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: url,
      AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    }),
  );
  return {
    visible: Number(r.Attributes.ApproximateNumberOfMessages),
    invisible: Number(r.Attributes.ApproximateNumberOfMessagesNotVisible),
  };
}

/** Puts n token messages on the queue with SendMessageBatch, 8 batches at a time (`body(i)`
 * makes the i-th; a good token by default). */
async function enqueue(queueUrl, n, tag, body = (i) => tokenBody(i, tag)) {
  let next = 0;
  async function lane() {
    while (next < n) {
      const start = next;
      next = Math.min(n, next + 10);
      const entries = [];
      for (let i = start; i < next; i++) entries.push({ Id: String(i - start), MessageBody: body(i) });
      const r = await sqs.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }));
      if (r.Failed && r.Failed.length) throw new Error(`SendMessageBatch: ${r.Failed.length} failed`);
    }
  }
  await Promise.all(Array.from({ length: 8 }, lane));
}

/** Waits (bounded) until the subscriber queue holds `n` events; returns what it holds. */
async function waitForEvents(subUrl, n, timeoutMs = 20_000) {
  const deadline = now() + timeoutMs;
  let d;
  do {
    d = await queueDepth(subUrl);
    if (d.visible + d.invisible >= n) break;
    await sleep(250);
  } while (now() < deadline);
  return d.visible + d.invisible;
}

// ---------------------------------------------------------------------------------------------
// the emulator

const EMU = { url: null, child: null };

async function startEmulator() {
  const port = await freePort();
  EMU.url = `http://127.0.0.1:${port}`;
  EMU.child = startProcess("emulator", BIN, ["emulator", "--listen", `127.0.0.1:${port}`], {
    PATH: process.env.PATH,
    RUST_LOG: "warn",
  });
  const deadline = now() + 10_000;
  while (now() < deadline) {
    try {
      await httpJson(`${EMU.url}/emulator/stats`);
      return;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`the emulator did not answer within 10 s (log: ${EMU.child.logPath})`);
}

const emulator = {
  config: (c) => httpJson(`${EMU.url}/emulator/config`, { method: "POST", body: JSON.stringify(c), headers: { "content-type": "application/json" } }),
  reset: () => httpJson(`${EMU.url}/emulator/reset`, { method: "POST" }),
  stats: () => httpJson(`${EMU.url}/emulator/stats`),
  normal: () => emulator.config({ quota: null, latencyMs: 0, errorRate: 0, disabled: false }),
};

// ---------------------------------------------------------------------------------------------
// the two workers behind one interface: start, sample() -> counts, pid, stop

/** mp-resolver `run`, counts from its /metrics. */
class Ours {
  static label = "mp-resolver";
  /** `store`: the name of an embedded store file shared with other processes of the same run
   * (a fleet's), kept as it is; otherwise a fresh file per process. */
  constructor(pipeline, env = {}, { store = null } = {}) {
    this.pipeline = pipeline;
    this.extraEnv = env;
    this.store = store;
  }
  async start(name) {
    this.port = await freePort();
    // A fresh embedded store per run: an earlier run's file would know these tokens as published.
    const storePath = path.join(WORKDIR, "store", `${this.store || name}.db`);
    fs.mkdirSync(path.dirname(storePath), { recursive: true });
    if (!this.store) fs.rmSync(storePath, { force: true });
    const env = {
      ...baseEnv(),
      MPR_QUEUE_URL: this.pipeline.queueUrl,
      MPR_DLQ_URL: this.pipeline.dlqUrl,
      MPR_TOPIC_ARN: this.pipeline.topicArn,
      MPR_ADMIN__LISTEN: `127.0.0.1:${this.port}`,
      // BENCH_WORKER_LOG=debug shows each ResolveCustomer call with the rate limit after it.
      MPR_LOG__LEVEL: process.env.BENCH_WORKER_LOG || "warn",
      // Only how long a stop waits for in-flight work (the bench stops the worker mid-backlog).
      MPR_WORKER__SHUTDOWN_GRACE_SECS: "2",
      // A fresh embedded store per run (the default kind), so no run reads another's answers.
      MPR_STORE__PATH: storePath,
      ...this.extraEnv,
    };
    this.child = startProcess(name, BIN, ["run"], env);
    this.pid = this.child.pid;
  }
  async sample() {
    let text;
    try {
      const res = await fetch(`http://127.0.0.1:${this.port}/metrics`, { signal: AbortSignal.timeout(5_000) });
      text = await res.text();
    } catch {
      return null; // not listening yet
    }
    const s = { received: 0, published: 0, deadLettered: 0, requests: {}, inFlight: 0, storeCalls: 0, storeOps: {}, storeWrites: 0, writeUnits: 0, usage: {}, records: {} };
    for (const line of text.split("\n")) {
      let m;
      if ((m = line.match(/^mpr_messages_received_total (\S+)/))) s.received = Number(m[1]);
      else if ((m = line.match(/^mpr_outcomes_total\{outcome="([^"]+)"\} (\S+)/))) {
        if (m[1] === "published") s.published += Number(m[2]);
      } else if ((m = line.match(/^mpr_dead_letters_total\{[^}]*\} (\S+)/))) s.deadLettered += Number(m[1]);
      else if ((m = line.match(/^mpr_aws_calls_total\{(.*)\} (\S+)/))) {
        const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
        const key = `${labels.service}:${labels.operation}`;
        s.requests[key] = (s.requests[key] || 0) + Number(m[2]);
      } else if ((m = line.match(/^mpr_in_flight (\S+)/))) s.inFlight = Number(m[1]);
      else if ((m = line.match(/^mpr_resolve_rate_limit (\S+)/))) s.rate = Number(m[1]);
      else if ((m = line.match(/^mpr_store_calls_total\{([^}]*)\} (\S+)/))) {
        s.storeCalls += Number(m[2]);
        const op = (m[1].match(/operation="([^"]*)"/) || [])[1] || "?";
        s.storeOps[op] = (s.storeOps[op] || 0) + Number(m[2]);
        if (op === "write") s.storeWrites += Number(m[2]);
      } else if ((m = line.match(/^mpr_store_write_units_total (\S+)/))) s.writeUnits = Number(m[1]);
      else if ((m = line.match(/^mpr_usage_events_total\{result="([^"]+)"\} (\S+)/))) s.usage[m[1]] = Number(m[2]);
      else if ((m = line.match(/^mpr_usage_records_metered_total\{status="([^"]+)"\} (\S+)/))) s.records[m[1]] = Number(m[2]);
    }
    return s;
  }
  stop() {
    return stopProcess(this.child);
  }
}

/** The sqs-consumer baseline, counts from the BENCH lines it prints. */
class Baseline {
  static label = "sqs-consumer baseline";
  constructor(pipeline) {
    this.pipeline = pipeline;
    this.latest = null;
  }
  async start(name) {
    const env = {
      ...baseEnv(),
      QUEUE_URL: this.pipeline.queueUrl,
      DLQ_URL: this.pipeline.dlqUrl,
      TOPIC_ARN: this.pipeline.topicArn,
      BENCH_STATS_MS: "100",
    };
    this.child = startProcess(name, process.execPath, [BASELINE], env, { pipeStdout: true });
    this.pid = this.child.pid;
    let buf = "";
    this.child.stdout.setEncoding("utf8");
    this.child.stdout.on("data", (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith("BENCH ")) this.latest = JSON.parse(line.slice(6));
      }
    });
  }
  async sample() {
    if (!this.latest) return null;
    const l = this.latest;
    return { received: l.received, published: l.processed, deadLettered: l.deadLettered, requests: l.requests, inFlight: null };
  }
  stop() {
    return stopProcess(this.child);
  }
}

const totalRequests = (req) => Object.values(req || {}).reduce((a, b) => a + b, 0);

/** Polls `w.sample()` every `everyMs` until `pred(sample)` or the deadline; returns [sample, ms]. */
async function waitFor(w, pred, everyMs, timeoutMs) {
  const deadline = now() + timeoutMs;
  for (;;) {
    const s = await w.sample();
    if (s && pred(s)) return [s, now()];
    if (!children.has(w.child)) throw new Error(`${w.constructor.label} exited early; log: ${w.child.logPath}`);
    if (now() > deadline) throw new Error(`${w.constructor.label}: timed out after ${timeoutMs} ms (last: ${JSON.stringify(s)})`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// scenarios

const IMPLS = {
  baseline: { make: (p) => new Baseline(p), label: "sqs-consumer baseline" },
  ours: { make: (p) => new Ours(p), label: "mp-resolver (defaults)" },
  oursWarm: {
    make: (p) => new Ours(p, { MPR_RATE_LIMIT__INITIAL_PER_SEC: String(S.warmRate) }),
    label: `mp-resolver (rate_limit.initial_per_sec = ${S.warmRate})`,
  },
  // The runtime the worker had before issue #23 (tokio's multi-thread runtime, a thread per core),
  // against the default's one thread: what thread hand-offs cost.
  oursThreads: {
    make: (p) => new Ours(p, { MPR_WORKER__RUNTIME_THREADS: String(os.cpus().length) }),
    label: "mp-resolver (worker.runtime_threads = cores)",
  },
  oursNoLinger: {
    make: (p) => new Ours(p, { MPR_PUBLISH__LINGER_MS: "0" }),
    label: "mp-resolver (publish.linger_ms = 0)",
  },
  // The shared store: one DynamoDB table in moto's server (BENCH_DYNAMODB, started by
  // scripts/bench.sh); throughput may be bound by the emulator, so its CPU is reported.
  oursDynamo: {
    make: (p) =>
      new Ours(p, {
        MPR_STORE__KIND: "dynamodb",
        MPR_STORE__TABLE: DYNAMO_TABLE,
        AWS_ENDPOINT_URL_DYNAMODB: DYNAMO || "",
      }),
    label: "mp-resolver (store.kind = dynamodb, moto's server)",
  },
};

/** Start-up time to the first receive that returns a message, and RSS once idle. */
async function startupRun(kind, run) {
  const p = await createPipeline(`startup-${kind}`);
  try {
    await enqueue(p.queueUrl, 1, `st${run}${kind}`);
    const w = IMPLS[kind].make(p);
    const t0 = now();
    await w.start(`startup-${kind}-${run}`);
    const [, tFirst] = await waitFor(w, (s) => s.received >= 1, 2, 30_000);
    await waitFor(w, (s) => s.published >= 1, 20, 30_000);
    await sleep(S.idleSettleMs);
    const mem = memory(w.pid);
    const cpu = cpuSeconds(w.pid);
    await w.stop();
    return { startupMs: tFirst - t0, idleRssMiB: mem.rssMiB, cpuS: cpu };
  } finally {
    await destroyPipeline(p);
  }
}

/** 10,000 (--tokens) good tokens already on the queue; time from the first receive to the last
 * publish. Options: `tokens` (another backlog), `make` (the worker, instead of IMPLS[kind]'s),
 * `body` (the i-th message), `othersDone` (also the time until that many events were published:
 * as many as there are tokens that are not hot). */
async function throughputRun(kind, run, { tokens = OPT.tokens, make = null, body = undefined, othersDone = null } = {}) {
  const N = tokens;
  const p = await createPipeline(`tp-${kind}`);
  try {
    await enqueue(p.queueUrl, N, `tp${run}${kind}`, body);
    await emulator.reset();
    const w = kind === "ceiling" ? null : (make || IMPLS[kind].make)(p);
    const lsCpu0 = LS_PID ? cpuSeconds(LS_PID) : null;
    const emuCpu0 = cpuSeconds(EMU.child.pid);
    const dynamoCpu0 = DYNAMO_PID ? cpuSeconds(DYNAMO_PID) : null;
    let r;
    if (kind === "ceiling") {
      r = await ceiling(p, N);
    } else {
      await w.start(`throughput-${kind}-${run}`);
      const [first, tFirst] = await waitFor(w, (s) => s.received >= 1, 5, 30_000);
      let maxInFlight = 0;
      let tOthers = null;
      const [s, tDone] = await waitFor(
        w,
        (s) => {
          maxInFlight = Math.max(maxInFlight, s.inFlight || 0);
          if (othersDone !== null && tOthers === null && s.published >= othersDone) tOthers = now();
          return s.published + s.deadLettered >= N;
        },
        100,
        S.throughputTimeoutS * 1000,
      );
      const cpu = cpuSeconds(w.pid);
      const mem = memory(w.pid);
      await w.stop();
      r = {
        seconds: (tDone - tFirst) / 1000,
        cpuS: cpu,
        peakRssMiB: mem.hwmMiB,
        requests: s.requests,
        requestsTotal: totalRequests(s.requests),
        deadLettered: s.deadLettered,
        storeCalls: s.storeCalls,
        writeUnits: s.writeUnits,
        maxInFlight,
        othersPerS: tOthers === null ? null : othersDone / ((tOthers - tFirst) / 1000),
        // The ResolveCustomer rate limit at the first receive (the fleet's learned rate, or the start).
        startRate: first.rate ?? null,
      };
    }
    r.tokens = N;
    r.tokensPerS = N / r.seconds;
    r.lsCpuS = LS_PID ? cpuSeconds(LS_PID) - lsCpu0 : null;
    r.emuCpuS = cpuSeconds(EMU.child.pid) - emuCpu0;
    r.dynamoCpuS = DYNAMO_PID ? cpuSeconds(DYNAMO_PID) - dynamoCpu0 : null;
    const stats = await emulator.stats();
    r.resolveCalls = stats.calls;
    r.throttled = stats.throttled;
    r.events = await waitForEvents(p.subUrl, N);
    r.dlq = (await queueDepth(p.dlqUrl)).visible;
    if (r.events < N) log(`warning: ${kind} run ${run}: ${r.events} of ${N} events on the subscriber queue`);
    return r;
  } finally {
    await destroyPipeline(p);
  }
}

/** LocalStack's ceiling for our call mix: receive 10 -> PublishBatch 10 -> DeleteMessageBatch 10,
 * from `ceilingLoops` concurrent loops in this process, no ResolveCustomer. */
async function ceiling(p, N, { queueUrl = p.queueUrl, publish = true } = {}) {
  let done = 0;
  const cpu0 = process.cpuUsage();
  const deadline = now() + S.throughputTimeoutS * 1000;
  const requests = {};
  const count = (k) => (requests[k] = (requests[k] || 0) + 1);
  let tFirst = null;
  async function loop() {
    while (done < N && now() < deadline) {
      const r = await sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: 1,
          VisibilityTimeout: 60,
          MessageSystemAttributeNames: ["SentTimestamp", "ApproximateReceiveCount"],
        }),
      );
      count("sqs:ReceiveMessage");
      const msgs = r.Messages || [];
      if (msgs.length === 0) continue;
      tFirst ??= now();
      if (publish) await sns.send(
        new PublishBatchCommand({
          TopicArn: p.topicArn,
          PublishBatchRequestEntries: msgs.map((m, i) => ({
            Id: String(i),
            Message: fakeEvent(m),
            MessageAttributes: {
              eventType: { DataType: "String", StringValue: "marketplace.customer.resolved" },
              productCode: { DataType: "String", StringValue: "prod-abc" },
              customerAWSAccountId: { DataType: "String", StringValue: "123456789012" },
            },
          })),
        }),
      );
      if (publish) count("sns:PublishBatch");
      await sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: msgs.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
        }),
      );
      count("sqs:DeleteMessageBatch");
      done += msgs.length;
    }
  }
  await Promise.all(Array.from({ length: S.ceilingLoops }, loop));
  const tDone = now();
  const cpu = process.cpuUsage(cpu0);
  if (done < N) throw new Error(`ceiling: only ${done} of ${N} within the time limit`);
  return {
    seconds: (tDone - tFirst) / 1000,
    cpuS: (cpu.user + cpu.system) / 1e6,
    requests,
    requestsTotal: totalRequests(requests),
  };
}

function fakeEvent(m) {
  const body = JSON.parse(m.Body);
  return JSON.stringify({
    eventType: "marketplace.customer.resolved",
    schemaVersion: 1,
    eventId: m.MessageId.replace(/-/g, "").slice(0, 32),
    customerIdentifier: null,
    customerAWSAccountId: "123456789012",
    productCode: "prod-abc",
    licenseArn: null,
    agreementId: null,
    signupId: body.signupId ?? null,
    context: body.context ?? {},
    submittedAt: null,
    enqueuedAt: new Date(Number(m.Attributes?.SentTimestamp)).toISOString(),
    resolvedAt: new Date().toISOString(),
    attempts: 1,
  });
}

/** Peak RSS of our worker with 256 messages in flight (emulator latency holds them in flight). */
async function rssRun(run) {
  const p = await createPipeline("rss");
  try {
    await enqueue(p.queueUrl, S.rssTokens, `rss${run}`);
    await emulator.config({ latencyMs: S.rssEmulatorLatencyMs });
    const w = new Ours(p, { MPR_WORKER__MAX_IN_FLIGHT: "256" });
    await w.start(`rss-${run}`);
    let maxInFlight = 0;
    const [s] = await waitFor(
      w,
      (s) => {
        maxInFlight = Math.max(maxInFlight, s.inFlight || 0);
        return s.published >= S.rssTokens;
      },
      50,
      300_000,
    );
    const mem = memory(w.pid);
    await w.stop();
    return { peakRssMiB: mem.hwmMiB, maxInFlight, published: s.published };
  } finally {
    await emulator.normal();
    await destroyPipeline(p);
  }
}

/** Enqueue at a steady `rate` (one SendMessage per token, as a front end does), each body stamped
 * with its send time; read the events off the raw-delivery subscriber queue; latency = event
 * received - SendMessage started. Only tokens sent after the warm-up count. `kind` null = the
 * measurement floor: no worker, the driver publishes each stamped message to the topic itself
 * (LocalStack's SNS -> SQS delivery plus the reading). */
async function latencyRun(kind, run, rate) {
  const p = await createPipeline(`lat-${kind || "floor"}`);
  let w = null;
  try {
    if (kind) {
      w = IMPLS[kind].make(p);
      await w.start(`latency-${kind}-${run}`);
      // Up and its first (long-poll) receive waiting: the admin listener / first stats line, then 1 s.
      await waitFor(w, () => true, 20, 30_000);
      await sleep(1_000);
    }
    const total = Math.round(rate * (S.latencyWarmS + S.latencyMeasureS));
    const firstMeasured = Math.round(rate * S.latencyWarmS);
    const t0ns = process.hrtime.bigint();
    const lat = new Map(); // index -> ms
    let reading = true;
    const readers = Array.from({ length: S.latencyReaders }, async () => {
      while (reading) {
        const r = await sqs.send(
          new ReceiveMessageCommand({ QueueUrl: p.subUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }),
        );
        const at = process.hrtime.bigint();
        const msgs = r.Messages || [];
        for (const m of msgs) {
          const ctx = JSON.parse(m.Body).context || {};
          if (ctx.sentAtNs && ctx.i) lat.set(Number(ctx.i), Number(at - BigInt(ctx.sentAtNs)) / 1e6);
        }
        if (msgs.length) {
          sqs
            .send(new DeleteMessageBatchCommand({ QueueUrl: p.subUrl, Entries: msgs.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })) }))
            .catch(() => {});
        }
      }
    });
    // The sender: token i goes at t0 + i/rate, whatever the previous sends are doing.
    const sends = [];
    let sendErrors = 0;
    for (let i = 0; i < total; i++) {
      const due = Number(t0ns) / 1e6 + (i * 1000) / rate;
      const wait = due - Number(process.hrtime.bigint()) / 1e6;
      if (wait > 1) await sleep(wait);
      const sentAtNs = process.hrtime.bigint().toString();
      const context = { sentAtNs, i: String(i) };
      const send = kind
        ? sqs.send(new SendMessageCommand({ QueueUrl: p.queueUrl, MessageBody: tokenBody(i, `lat${run}${kind}`, context) }))
        : sns.send(new PublishCommand({ TopicArn: p.topicArn, Message: JSON.stringify({ eventType: "marketplace.customer.resolved", context }) }));
      sends.push(send.catch(() => sendErrors++));
    }
    await Promise.all(sends);
    const deadline = now() + 30_000;
    while (now() < deadline) {
      let missing = 0;
      for (let i = firstMeasured; i < total; i++) if (!lat.has(i)) missing++;
      if (missing === 0) break;
      await sleep(100);
    }
    reading = false;
    await Promise.all(readers);
    const measured = [];
    for (let i = firstMeasured; i < total; i++) if (lat.has(i)) measured.push(lat.get(i));
    measured.sort((a, b) => a - b);
    const r = {
      rate,
      sent: total - firstMeasured,
      received: measured.length,
      sendErrors,
      p50: percentile(measured, 50),
      p90: percentile(measured, 90),
      p99: percentile(measured, 99),
      max: measured[measured.length - 1] ?? null,
    };
    if (w) {
      const s = await w.sample();
      r.requestsPerToken = totalRequests(s.requests) / Math.max(1, s.published);
      r.requests = s.requests;
      r.published = s.published;
      await w.stop();
      w = null;
    }
    return r;
  } finally {
    if (w) await w.stop();
    await destroyPipeline(p);
  }
}

/** Goodput under a ResolveCustomer quota: quota Q, a backlog far above it, a fixed window. */
async function goodputRun(kind, run) {
  const p = await createPipeline(`gp-${kind}`);
  try {
    await enqueue(p.queueUrl, S.goodputTokens, `gp${run}${kind}`);
    await emulator.config({ quota: S.goodputQuota });
    await emulator.reset();
    const w = IMPLS[kind].make(p);
    await w.start(`goodput-${kind}-${run}`);
    const [s0, tFirst] = await waitFor(w, (s) => s.received >= 1, 5, 30_000);
    // A sample after the first 10 s too: the rest of the window shows the steady state, without
    // our rate limit's ramp from its initial rate.
    await sleep(Math.max(0, tFirst + 10_000 - now()));
    const [sMid, tMid] = [await w.sample(), now()];
    await sleep(Math.max(0, tFirst + S.goodputWindowS * 1000 - now()));
    const [s1, t1] = [await w.sample(), now()];
    const stats = await emulator.stats();
    await w.stop();
    const seconds = (t1 - tFirst) / 1000;
    const resolved = s1.published - s0.published;
    const steadyPerS = (s1.published - sMid.published) / ((t1 - tMid) / 1000);
    return {
      seconds,
      resolved,
      tokensPerS: resolved / seconds,
      goodputOverQ: resolved / seconds / S.goodputQuota,
      steadyGoodputOverQ: steadyPerS / S.goodputQuota,
      calls: stats.calls,
      throttled: stats.throttled,
      throttledShare: stats.calls ? stats.throttled / stats.calls : null,
      deadLettered: s1.deadLettered,
      requestsPerToken: totalRequests(s1.requests) / Math.max(1, s1.published),
    };
  } finally {
    await emulator.normal();
    await destroyPipeline(p);
  }
}

/** A new task on a backlog (issue #23): autoscaling adds a task because there is a backlog, so
 * what counts is how fast it is from its first second. S.newTaskTokens tokens, side by side: the
 * baseline; ours on a fresh store (its rate limit starts at the configured rate); ours on the store
 * of a task that has just drained a backlog of the same size (the rate the fleet learned). */
async function newTaskRun(kind, run) {
  const N = S.newTaskTokens;
  if (kind !== "oursFleet") return throughputRun(kind, run, { tokens: N });
  const store = `fleet-${run}`;
  fs.rmSync(path.join(WORKDIR, "store", `${store}.db`), { force: true });
  // Each run's tokens are its own (the kind names them): the store would know the first run's.
  const before = await throughputRun("oursFleetBefore", run, { tokens: N, make: (p) => new Ours(p, {}, { store }) });
  const r = await throughputRun("oursFleet", run, { tokens: N, make: (p) => new Ours(p, {}, { store }) });
  r.fleetBeforeTokensPerS = before.tokensPerS;
  return r;
}

/** Hot tokens (issue #23): S.hotTokens good tokens, of which S.hotShare are throttled 8 times
 * each by the emulator (`throttle: 8`), against the same backlog with none: the others' rate is
 * the time until as many events as there are other tokens were published. */
async function hotRun(kind, run) {
  const N = S.hotTokens;
  const hot = Math.round(N * S.hotShare);
  const every = Math.round(N / hot);
  const tag = `hot${run}${kind}`;
  const body = kind === "oursHot" ? (i) => tokenBody(i, tag, {}, i % every === 0 ? hotToken(i, tag, 8) : goodToken(i, tag)) : undefined;
  return throughputRun(kind, run, { tokens: N, make: (p) => new Ours(p), body, othersDone: N - hot });
}

// ---------------------------------------------------------------------------------------------
// main

// ---------------------------------------------------------------------------------------------
// the usage lane (no baseline has one: ours alone, beside the store's own bound)

const USAGE_PRODUCT = "prod-bench";
const USAGE_DIMENSIONS = ["api_calls", "storage_gb"];
const usageAccount = (seed, i) => String(500_000_000_000 + seed * 10_000 + i).padStart(12, "0");
const usageLicense = (seed, i) => `arn:aws:license-manager::${usageAccount(seed, i)}:license:l-bench${i}`;

/** Puts the bodies on the queue with SendMessageBatch, 8 batches at a time. */
async function enqueueBodies(queueUrl, bodies) {
  let next = 0;
  async function lane() {
    while (next < bodies.length) {
      const start = next;
      next = Math.min(bodies.length, next + 10);
      const entries = bodies.slice(start, next).map((b, j) => ({ Id: String(j), MessageBody: b }));
      const r = await sqs.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }));
      if (r.Failed && r.Failed.length) throw new Error(`SendMessageBatch: ${r.Failed.length} failed`);
    }
  }
  await Promise.all(Array.from({ length: 8 }, lane));
}

/** N usage events (S.usageEvents; fewer on DynamoDB, whose figure is moto's) on the usage queue
 * before the worker starts, all in the last hour: ingest rate from the first event counted to the
 * last, store writes per event, peak RSS; then the 1,000 records metered and the BatchMeterUsage
 * calls they took. */
async function usageRun(kind, run) {
  const N = kind === "oursDynamo" ? S.usageDynamoEvents : S.usageEvents;
  const subs = S.usageSubscriptions;
  const seed = run * 10 + (kind === "oursDynamo" ? 1 : 0);
  const p = await createPipeline(`usage-${kind}`);
  const udlq = await sqs.send(new CreateQueueCommand({ QueueName: `${p.name}-usage-dlq` }));
  const uq = await sqs.send(
    new CreateQueueCommand({
      QueueName: `${p.name}-usage`,
      Attributes: {
        VisibilityTimeout: "60",
        RedrivePolicy: JSON.stringify({ deadLetterTargetArn: await queueArn(udlq.QueueUrl), maxReceiveCount: "10" }),
      },
    }),
  );
  try {
    await emulator.reset();
    for (let i = 0; i < subs; i += 25) {
      await Promise.all(
        Array.from({ length: Math.min(25, subs - i) }, (_, k) =>
          httpJson(`${EMU.url}/emulator/subscribers`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ productCode: USAGE_PRODUCT, customerAWSAccountId: usageAccount(seed, i + k), licenseArn: usageLicense(seed, i + k) }),
          }),
        ),
      );
    }
    const hour = Math.floor(Date.now() / 3_600_000) * 3600 - 3600;
    const want = new Map();
    const bodies = [];
    for (let i = 0; i < N; i++) {
      const sub = i % subs;
      const dimension = USAGE_DIMENSIONS[Math.floor(i / subs) % 2];
      const quantity = 1 + (i % 5);
      const at = new Date((hour + ((i * 7) % 3600)) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
      bodies.push(JSON.stringify({ usageId: `bench-${seed}-${i}`, customerAWSAccountId: usageAccount(seed, sub), licenseArn: usageLicense(seed, sub), dimension, quantity, timestamp: at }));
      const key = `${usageLicense(seed, sub)} ${dimension}`;
      want.set(key, (want.get(key) || 0) + quantity);
    }
    await enqueueBodies(uq.QueueUrl, bodies);
    if (kind === "ceiling") {
      // LocalStack's own bound for the lane's SQS calls: receive 10 -> DeleteMessageBatch 10 from
      // `ceilingLoops` loops in this process, nothing counted.
      const lsCpu0 = LS_PID ? cpuSeconds(LS_PID) : null;
      const r = await ceiling(p, N, { queueUrl: uq.QueueUrl, publish: false });
      return { events: N, seconds: r.seconds, eventsPerS: N / r.seconds, requests: r.requests, lsCpuS: LS_PID ? cpuSeconds(LS_PID) - lsCpu0 : null };
    }
    const storeEnv = kind === "oursDynamo" ? { MPR_STORE__KIND: "dynamodb", MPR_STORE__TABLE: DYNAMO_USAGE_TABLE, AWS_ENDPOINT_URL_DYNAMODB: DYNAMO || "" } : {};
    const w = new Ours(p, {
      ...storeEnv,
      MPR_USAGE_QUEUE_URL: uq.QueueUrl,
      MPR_USAGE_DLQ_URL: udlq.QueueUrl,
      MPR_PRODUCT_CODES: USAGE_PRODUCT,
      MPR_METERING__SETTLE_SECS: String(kind === "oursDynamo" ? S.usageDynamoSettleS : S.usageSettleS),
      // The last hour may have ended up to an hour ago: its longest delay must not pass mid-run.
      MPR_METERING__MAX_DELAY_SECS: "10800",
    });
    const lsCpu0 = LS_PID ? cpuSeconds(LS_PID) : null;
    const dynamoCpu0 = DYNAMO_PID ? cpuSeconds(DYNAMO_PID) : null;
    const counted = (s) => Object.entries(s.usage).filter(([k]) => k !== "handed_back").reduce((a, [, v]) => a + v, 0);
    await w.start(`usage-${kind}-${run}`);
    const [, tFirst] = await waitFor(w, (s) => counted(s) >= 1, 5, 60_000);
    // RSS a quarter of the way and at the end: flat with the backlog, or growing with it.
    await waitFor(w, (s) => counted(s) >= N / 4, 50, S.usageTimeoutS * 1000);
    const quarterRssMiB = memory(w.pid).rssMiB;
    const [s, tDone] = await waitFor(w, (s) => counted(s) >= N, 50, S.usageTimeoutS * 1000);
    const cpu = cpuSeconds(w.pid);
    const mem = memory(w.pid);
    const lsCpuS = LS_PID ? cpuSeconds(LS_PID) - lsCpu0 : null;
    const dynamoCpuS = DYNAMO_PID ? cpuSeconds(DYNAMO_PID) - dynamoCpu0 : null;
    // Then every hour's record: settle_secs after the last event, in batches of 25.
    const deadline = now() + S.usageTimeoutS * 1000;
    let records = [];
    while (now() < deadline) {
      records = (await httpJson(`${EMU.url}/emulator/metering`)).filter((r) => r.productCode === USAGE_PRODUCT);
      if (records.length >= want.size) break;
      await sleep(250);
    }
    const stats = await emulator.stats();
    const after = await w.sample();
    await w.stop();
    const wrong = records.filter((r) => want.get(`${r.licenseArn} ${r.dimension}`) !== r.quantity).length;
    if (records.length !== want.size || wrong) log(`warning: usage ${kind} run ${run}: ${records.length} of ${want.size} records, ${wrong} with another quantity`);
    return {
      events: N,
      seconds: (tDone - tFirst) / 1000,
      eventsPerS: N / ((tDone - tFirst) / 1000),
      cpuS: cpu,
      peakRssMiB: mem.hwmMiB,
      quarterRssMiB,
      endRssMiB: mem.rssMiB,
      storeWrites: s.storeWrites,
      storeCalls: s.storeCalls,
      storeOps: s.storeOps,
      writeUnits: s.writeUnits,
      requests: s.requests,
      usage: s.usage,
      lsCpuS,
      dynamoCpuS,
      recordsExpected: want.size,
      records: records.length,
      recordsWrong: wrong,
      meteringCalls: stats.meteringCalls,
      meteringThrottled: stats.meteringThrottled,
      recordsByStatus: after ? after.records : null,
    };
  } finally {
    await destroyPipeline(p);
    for (const url of [uq.QueueUrl, udlq.QueueUrl]) await sqs.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
  }
}

function machine() {
  const cpuinfo = fs.readFileSync("/proc/cpuinfo", "utf8");
  const model = (cpuinfo.match(/^model name\s*:\s*(.*)$/m) || [])[1] || "unknown";
  let lsVersion = null;
  try {
    lsVersion = execFileSync(path.join(ROOT, ".localstack-venv/bin/python"), ["-c", "import importlib.metadata as m; print(m.version('localstack-core'))"]).toString().trim();
  } catch {
    /* not there */
  }
  const pkg = (name) => JSON.parse(fs.readFileSync(path.join(__dirname, "node_modules", name, "package.json"), "utf8")).version;
  const git = (...args) => {
    try {
      return execFileSync("git", args, { cwd: ROOT }).toString().trim();
    } catch {
      return null;
    }
  };
  return {
    date: new Date().toISOString(),
    commit: git("rev-parse", "--short", "HEAD"),
    // Uncommitted changes to what the binary is built from, if any.
    dirty: git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "config/default.toml") || "",
    nproc: os.cpus().length,
    cpuModel: model,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavgAtStart: os.loadavg(),
    kernel: os.release(),
    node: process.version,
    localstack: lsVersion,
    sqsConsumer: pkg("sqs-consumer"),
    clientSqs: pkg("@aws-sdk/client-sqs"),
    clientSns: pkg("@aws-sdk/client-sns"),
    clientMetering: pkg("@aws-sdk/client-marketplace-metering"),
    options: { runs: OPT.runs, tokens: OPT.tokens, quick: OPT.quick },
    settings: S,
  };
}

const want = (s) => !OPT.only || OPT.only.has(s);

async function main() {
  const results = { machine: machine(), runs: {} };
  const save = () => fs.writeFileSync(path.join(OPT.out, "results.json"), JSON.stringify(results, null, 2));
  const record = (key, r) => {
    (results.runs[key] ||= []).push(r);
    save();
    log(key, JSON.stringify(r));
  };
  await startEmulator();
  if (DYNAMO) {
    for (const table of [DYNAMO_TABLE, DYNAMO_USAGE_TABLE]) {
      execFileSync(BIN, ["store", "create-table", "--table", table], {
        env: { ...baseEnv(), AWS_ENDPOINT_URL_DYNAMODB: DYNAMO },
        cwd: WORKDIR,
        stdio: "inherit",
      });
    }
  }
  log(`emulator at ${EMU.url}, LocalStack at ${LS}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);

  if (want("startup")) {
    for (let run = 1; run <= S.startupRuns; run++) {
      for (const kind of ["baseline", "ours"]) record(`startup.${kind}`, await startupRun(kind, run));
    }
  }
  if (want("throughput")) {
    // Interleaved, so that a noisy minute on the machine hits every contender alike.
    for (let run = 1; run <= OPT.runs; run++) {
      let kinds = ["ceiling", "baseline", "oursWarm", "ours", "oursThreads"];
      if (DYNAMO) kinds.push("oursDynamo");
      // BENCH_THROUGHPUT_KINDS=ours,oursDynamo measures only those (a partial re-measure).
      if (process.env.BENCH_THROUGHPUT_KINDS) {
        const only = process.env.BENCH_THROUGHPUT_KINDS.split(",");
        kinds = kinds.filter((k) => only.includes(k));
      }
      for (const kind of kinds) {
        record(`throughput.${kind}`, await throughputRun(kind, run));
      }
    }
  }
  if (want("newtask")) {
    for (let run = 1; run <= OPT.runs; run++) {
      for (const kind of ["baseline", "ours", "oursFleet"]) record(`newtask.${kind}`, await newTaskRun(kind, run));
    }
  }
  if (want("hot")) {
    for (let run = 1; run <= OPT.runs; run++) {
      for (const kind of ["oursClean", "oursHot"]) record(`hot.${kind}`, await hotRun(kind, run));
    }
  }
  if (want("rss")) {
    for (let run = 1; run <= OPT.runs; run++) record("rss.ours256", await rssRun(run));
  }
  if (want("latency")) {
    // Offered load: half of the baseline's maximum (the lower of the two), the same for both.
    // (Half of ours is more single SendMessage calls a second than LocalStack keeps up with.)
    // Without throughput figures from this run, a fixed rate.
    const maxOf = (k) => median((results.runs[`throughput.${k}`] || []).map((r) => r.tokensPerS));
    const rate = maxOf("baseline") ? Math.max(1, Math.round(maxOf("baseline") / 2)) : 40;
    results.latencyRates = { common: rate };
    for (let run = 1; run <= OPT.runs; run++) {
      if (run === 1) record("latency.floor", await latencyRun(null, run, rate));
      record("latency.baseline", await latencyRun("baseline", run, rate));
      record("latency.ours", await latencyRun("ours", run, rate));
      // What PublishBatch's linger costs in latency: the same with batches of whatever is ready.
      record("latency.oursNoLinger", await latencyRun("oursNoLinger", run, rate));
    }
  }
  if (want("goodput")) {
    for (let run = 1; run <= OPT.runs; run++) {
      for (const kind of ["baseline", "ours"]) record(`goodput.${kind}`, await goodputRun(kind, run));
    }
  }
  if (want("usage")) {
    for (let run = 1; run <= OPT.runs; run++) {
      record("usage.ceiling", await usageRun("ceiling", run));
      record("usage.ours", await usageRun("ours", run));
      // Once: moto's second run on the grown table stalled twice (BENCHMARKS.md, issue #23); one
      // run on a table of its own is the figure.
      if (DYNAMO && run === 1) record("usage.oursDynamo", await usageRun("oursDynamo", run));
    }
  }
  results.machine.loadavgAtEnd = os.loadavg();
  results.finished = new Date().toISOString();
  save();
  await stopProcess(EMU.child);
  const md = require("./report.js").render(results);
  fs.writeFileSync(path.join(OPT.out, "report.md"), md);
  log(`wrote ${path.join(OPT.out, "results.json")} and report.md`);
}

main().catch((err) => {
  console.error(err.stack || String(err));
  killAllChildren();
  process.exit(1);
});
