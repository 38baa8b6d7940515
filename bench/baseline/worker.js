// The baseline: the mp-resolver pipeline written the way most teams would write it today, with
// Node's `sqs-consumer` and the AWS SDK for JavaScript v3. Library defaults throughout: batch size
// 10 (the messages of a batch are handled in parallel, the next receive waits for the batch),
// 20 s long poll, one ResolveCustomer per message with the SDK's default retries (standard mode,
// 3 attempts), one SNS Publish per message, one SQS DeleteMessage per message (done by
// sqs-consumer when handleMessage returns the message). A failed message is left to reappear
// after the queue's visibility timeout; the queue's redrive policy is the last resort.
//
// Configuration (environment):
//   QUEUE_URL, DLQ_URL, TOPIC_ARN      the same resources mp-resolver uses
//   AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL (LocalStack),
//   AWS_ENDPOINT_URL_MARKETPLACE_METERING (the emulator)   read by the SDK itself
//   BENCH_STATS_MS   benchmark instrumentation only: print a `BENCH {...}` line with counts to
//                    stdout every this many ms (and one at the first receive that returns
//                    messages). Off when unset. The counts come from a middleware that counts
//                    every HTTP request (retries included) to SQS and SNS.

"use strict";

const crypto = require("node:crypto");
const { Consumer } = require("sqs-consumer");
const { SQSClient, SendMessageCommand } = require("@aws-sdk/client-sqs");
const { SNSClient, PublishCommand } = require("@aws-sdk/client-sns");
const {
  MarketplaceMeteringClient,
  ResolveCustomerCommand,
} = require("@aws-sdk/client-marketplace-metering");

const QUEUE_URL = mustEnv("QUEUE_URL");
const DLQ_URL = mustEnv("DLQ_URL");
const TOPIC_ARN = mustEnv("TOPIC_ARN");

const sqs = new SQSClient({});
const sns = new SNSClient({});
const metering = new MarketplaceMeteringClient({});

// --- benchmark instrumentation (not part of the pipeline) ------------------------------------
const stats = { requests: {}, processed: 0, deadLettered: 0, failed: 0, received: 0 };
function countRequests(client, service) {
  // The `deserialize` step runs once per HTTP attempt, below the retry middleware.
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const key = `${service}:${context.commandName.replace(/Command$/, "")}`;
      stats.requests[key] = (stats.requests[key] || 0) + 1;
      return next(args);
    },
    { step: "deserialize", name: "benchRequestCounter" },
  );
}
const statsMs = Number(process.env.BENCH_STATS_MS || 0);
function report() {
  process.stdout.write(`BENCH ${JSON.stringify({ t: Date.now(), ...stats })}\n`);
}
if (statsMs > 0) {
  countRequests(sqs, "sqs");
  countRequests(sns, "sns");
  setInterval(report, statsMs).unref();
}
// ---------------------------------------------------------------------------------------------

const DEAD_LETTER_ERRORS = {
  InvalidTokenException: "invalid_token",
  ExpiredTokenException: "expired_token",
};

async function deadLetter(message, reason, detail) {
  await sqs.send(
    new SendMessageCommand({
      QueueUrl: DLQ_URL,
      MessageBody: message.Body,
      MessageAttributes: {
        "mpr.reason": { DataType: "String", StringValue: reason },
        "mpr.detail": { DataType: "String", StringValue: detail.slice(0, 256) },
        "mpr.sourceMessageId": { DataType: "String", StringValue: message.MessageId },
      },
    }),
  );
  stats.deadLettered++;
  return message;
}

async function handleMessage(message) {
  let body;
  try {
    body = JSON.parse(message.Body);
  } catch {
    body = { registrationToken: message.Body.trim() };
  }
  const token = body && (body.registrationToken ?? body["x-amzn-marketplace-token"]);
  if (typeof token !== "string" || token.length === 0) {
    return deadLetter(message, "malformed_message", "no registrationToken");
  }

  let customer;
  try {
    customer = await metering.send(new ResolveCustomerCommand({ RegistrationToken: token }));
  } catch (err) {
    const reason = DEAD_LETTER_ERRORS[err.name];
    if (reason) {
      return deadLetter(message, reason, `ResolveCustomer: ${err.name}`);
    }
    throw err; // throttled or failing after the SDK's retries: let the message reappear
  }

  const sentAt = Number(message.Attributes?.SentTimestamp);
  const event = {
    eventType: "marketplace.customer.resolved",
    schemaVersion: 1,
    eventId: crypto.createHash("sha256").update(token).digest("hex").slice(0, 32),
    customerIdentifier: customer.CustomerIdentifier ?? null,
    customerAWSAccountId: customer.CustomerAWSAccountId,
    productCode: customer.ProductCode,
    licenseArn: customer.LicenseArn ?? null,
    agreementId: customer.AgreementId ?? null,
    signupId: body.signupId ?? null,
    context: body.context ?? {},
    submittedAt: body.submittedAt ?? null,
    enqueuedAt: Number.isFinite(sentAt) ? new Date(sentAt).toISOString() : null,
    resolvedAt: new Date().toISOString(),
    attempts: Number(message.Attributes?.ApproximateReceiveCount ?? 1),
  };
  await sns.send(
    new PublishCommand({
      TopicArn: TOPIC_ARN,
      Message: JSON.stringify(event),
      MessageAttributes: {
        eventType: { DataType: "String", StringValue: event.eventType },
        productCode: { DataType: "String", StringValue: event.productCode },
        customerAWSAccountId: { DataType: "String", StringValue: event.customerAWSAccountId },
      },
    }),
  );
  stats.processed++;
  return message; // sqs-consumer deletes it
}

const consumer = Consumer.create({
  queueUrl: QUEUE_URL,
  sqs,
  batchSize: 10,
  attributeNames: ["SentTimestamp", "ApproximateReceiveCount"],
  handleMessage,
});

let firstReceive = true;
consumer.on("message_received", () => {
  stats.received++;
  if (firstReceive && statsMs > 0) {
    firstReceive = false;
    report();
  }
});
consumer.on("error", (err) => console.error(`sqs error: ${err.message}`));
consumer.on("processing_error", (err) => {
  stats.failed++;
  console.error(`processing error: ${err.message}`);
});

function shutdown() {
  consumer.stop({ abort: false });
  if (statsMs > 0) report();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

consumer.start();

function mustEnv(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is required`);
    process.exit(78);
  }
  return value;
}
