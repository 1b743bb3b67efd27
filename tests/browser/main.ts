// The browser test's page (.ci/browser.sh): the official Connect-Web client
// calls the Greeter through the router, with each transport, pinned to each
// instance, and writes one table row per transport × instance × call.
//
// The query string says where and whom to call:
//   index.html?router=http://127.0.0.1:50051&instances=rust-1,py-1
// When every call has settled, <body> gets data-done="true" (and
// data-failed with the number of calls that failed). The driver
// (drive.mjs) reads the table; nothing here decides what is right.

import { type Client, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { Greeter } from "./gen/myservice/v1/myservice_pb";

/** One call's outcome, as the table shows it. */
interface Outcome {
  transport: string;
  instance: string;
  call: string;
  /** "ok" or "error". */
  status: string;
  /** The `instance_id` of each reply, in order. */
  answeredBy: string[];
  /** The `message` of each reply, in order. */
  replies: string[];
  /** The Connect code name of a failure ("not_found"), or "". */
  code: string;
  /** The failure's message, or "". */
  error: string;
  millis: number;
}

/** The greeting streamed back by StreamGreetings. */
const STREAM_COUNT = 3;
/** Every call's deadline (sent as connect-timeout-ms or grpc-timeout). */
const TIMEOUT_MS = 10_000;

const params = new URLSearchParams(location.search);
const router = params.get("router") ?? "";
const instances = (params.get("instances") ?? "").split(",").filter((id) => id !== "");

function transports(baseUrl: string): [string, Transport][] {
  return [
    ["connect+json", createConnectTransport({ baseUrl })],
    ["connect+proto", createConnectTransport({ baseUrl, useBinaryFormat: true })],
    ["grpc-web", createGrpcWebTransport({ baseUrl })],
  ];
}

/** Codes as the Connect protocol names them (Code.NotFound → "not_found"). */
function codeName(error: ConnectError): string {
  const names: Record<number, string> = {
    1: "canceled", 2: "unknown", 3: "invalid_argument", 4: "deadline_exceeded", 5: "not_found",
    6: "already_exists", 7: "permission_denied", 8: "resource_exhausted", 9: "failed_precondition",
    10: "aborted", 11: "out_of_range", 12: "unimplemented", 13: "internal", 14: "unavailable",
    15: "data_loss", 16: "unauthenticated",
  };
  return names[error.code] ?? `code ${error.code}`;
}

type Call = (client: Client<typeof Greeter>, headers: HeadersInit) =>
  Promise<{ message: string; instanceId: string }[]>;

const calls: [string, Call][] = [
  ["SayHello", async (client, headers) => [
    await client.sayHello({ name: "Ada" }, { headers, timeoutMs: TIMEOUT_MS }),
  ]],
  ["StreamGreetings", async (client, headers) => {
    const replies = [];
    for await (const reply of client.streamGreetings(
      { name: "Grace", count: STREAM_COUNT },
      { headers, timeoutMs: TIMEOUT_MS },
    )) {
      replies.push(reply);
    }
    return replies;
  }],
  // The instance fails the call with NOT_FOUND: the status must reach the
  // page (gRPC-Web's grpc-status, Connect's JSON error) across origins.
  ["SayHello fail:5", async (client, headers) => [
    await client.sayHello({ name: "fail:5" }, { headers, timeoutMs: TIMEOUT_MS }),
  ]],
];

async function run(transport: string, t: Transport, instance: string, call: string, f: Call): Promise<Outcome> {
  const client = createClient(Greeter, t);
  const started = performance.now();
  const outcome: Outcome = {
    transport, instance, call, status: "ok", answeredBy: [], replies: [], code: "", error: "", millis: 0,
  };
  try {
    for (const reply of await f(client, { "x-router-instance": instance })) {
      outcome.replies.push(reply.message);
      outcome.answeredBy.push(reply.instanceId);
    }
  } catch (e) {
    const error = ConnectError.from(e);
    outcome.status = "error";
    outcome.code = codeName(error);
    outcome.error = error.rawMessage;
    console.log(`${transport} ${instance} ${call}: ${outcome.code}: ${outcome.error}`);
  }
  outcome.millis = Math.round(performance.now() - started);
  return outcome;
}

function cell(row: HTMLTableRowElement, text: string | string[], name: string): void {
  const td = row.insertCell();
  td.className = name;
  if (Array.isArray(text)) {
    const list = document.createElement("ol");
    for (const item of text) {
      const li = document.createElement("li");
      li.textContent = item;
      list.append(li);
    }
    td.append(list);
  } else {
    td.textContent = text;
  }
}

function show(outcome: Outcome): void {
  const body = document.querySelector<HTMLTableSectionElement>("#results tbody");
  if (body === null) throw new Error("the page has no #results tbody");
  const row = body.insertRow();
  row.dataset.transport = outcome.transport;
  row.dataset.instance = outcome.instance;
  row.dataset.call = outcome.call;
  row.dataset.status = outcome.status;
  row.dataset.code = outcome.code;
  row.className = outcome.status;
  cell(row, outcome.transport, "transport");
  cell(row, outcome.instance, "instance");
  cell(row, outcome.call, "call");
  cell(row, outcome.status === "ok" ? "ok" : `${outcome.code}: ${outcome.error}`, "status");
  cell(row, outcome.answeredBy, "answered-by");
  cell(row, outcome.replies, "replies");
  cell(row, `${outcome.millis} ms`, "millis");
}

async function main(): Promise<void> {
  const heading = document.querySelector("#origin");
  if (heading !== null) heading.textContent = `${location.origin} → ${router}`;
  if (router === "" || instances.length === 0) {
    throw new Error("index.html needs ?router=<url>&instances=<id>,<id>");
  }
  let failed = 0;
  // One call at a time, so the table's order is the same on every run.
  for (const [transport, t] of transports(router)) {
    for (const instance of instances) {
      for (const [call, f] of calls) {
        const outcome = await run(transport, t, instance, call, f);
        if (outcome.status !== "ok") failed += 1;
        show(outcome);
      }
    }
  }
  document.body.dataset.failed = String(failed);
}

main()
  .catch((e: unknown) => {
    console.error(`the page failed: ${String(e)}`);
    document.body.dataset.pageError = String(e);
  })
  .finally(() => {
    document.body.dataset.done = "true";
  });
