// Drives headless Chromium (Debian's, through playwright-core) over the
// browser test's page and checks what the page shows (.ci/browser.sh).
//
//   node drive.mjs --chromium /usr/bin/chromium --page URL [--page URL] \
//       --denied URL --instances rust-1,py-1 --screenshot out.png [--timeout-ms 60000]
//
// Each --page is index.html from an origin the router allows; every
// transport × instance × call must show its expected replies, answered by
// the pinned instance, and the requested failure as not_found. Every
// response from the router must have come over HTTP/1.1 when the page's
// ?router= is http://, over HTTP/2 when it is https:// (Chromium speaks h2
// only over TLS; the router's certificate is not checked). A screenshot of
// the first page goes to --screenshot. --denied is the same page from an
// origin the router does not allow: every call must fail, and Chromium must
// say CORS blocked it.
// On any failure it prints what it expected, the table and the page's
// console, and exits 1.

import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    chromium: { type: "string", default: "/usr/bin/chromium" },
    page: { type: "string", multiple: true },
    denied: { type: "string" },
    instances: { type: "string" },
    screenshot: { type: "string" },
    "timeout-ms": { type: "string", default: "60000" },
  },
});
for (const required of ["page", "denied", "instances", "screenshot"]) {
  if (!args[required]) {
    console.error(`drive.mjs: --${required} is required`);
    process.exit(2);
  }
}
const instances = args.instances.split(",");
const timeout = Number(args["timeout-ms"]);
const TRANSPORTS = ["connect+json", "connect+proto", "grpc-web"];
const STREAMED = ["Hello #0, Grace!", "Hello #1, Grace!", "Hello #2, Grace!"];
/** Smaller than any screenshot of a filled table (a blank page is about 5 KB). */
const MIN_SCREENSHOT_BYTES = 20_000;

/** What each call must show, pinned to `instance`. */
function expected(instance) {
  return {
    SayHello: { status: "ok", answeredBy: [instance], replies: ["Hello, Ada!"] },
    StreamGreetings: { status: "ok", answeredBy: STREAMED.map(() => instance), replies: STREAMED },
    "SayHello fail:5": { status: "error", code: "not_found", error: "requested failure" },
  };
}

const problems = [];
const logs = [];

/** Loads `url` in a new tab, waits for data-done and returns the table's
 * rows, and the HTTP version of each response from the router's origin. */
async function load(context, name, url) {
  const page = await context.newPage();
  const router = new URL(new URL(url).searchParams.get("router") ?? url).origin;
  const protocols = [];
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.responseReceived", (e) => {
    if (new URL(e.response.url).origin === router) protocols.push(e.response.protocol);
  });
  page.on("console", (m) => logs.push(`[${name}] console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`[${name}] page error: ${e.message}`));
  page.on("requestfailed", (r) => logs.push(`[${name}] request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  const started = Date.now();
  await page.goto(url, { timeout });
  try {
    await page.waitForSelector("body[data-done]", { state: "attached", timeout });
  } catch (e) {
    const shown = await page.evaluate(() => document.body.innerText).catch(() => "(unreadable)");
    throw new Error(`${name}: the page did not finish within ${timeout} ms (${e.message}); it shows:\n${shown}`);
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(2);
  const pageError = await page.evaluate(() => document.body.dataset.pageError ?? "");
  if (pageError) problems.push(`${name}: the page failed: ${pageError}`);
  const rows = await page.$$eval("#results tbody tr", (trs) =>
    trs.map((tr) => ({
      transport: tr.dataset.transport,
      instance: tr.dataset.instance,
      call: tr.dataset.call,
      status: tr.dataset.status,
      code: tr.dataset.code,
      error: tr.querySelector("td.status")?.textContent ?? "",
      answeredBy: [...tr.querySelectorAll("td.answered-by li")].map((li) => li.textContent),
      replies: [...tr.querySelectorAll("td.replies li")].map((li) => li.textContent),
      millis: tr.querySelector("td.millis")?.textContent ?? "",
    })),
  );
  return { page, rows, seconds, router, protocols };
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function checkAllowed(name, { rows, router, protocols }) {
  const want = TRANSPORTS.length * instances.length * Object.keys(expected("")).length;
  if (rows.length !== want) problems.push(`${name}: ${rows.length} rows, expected ${want}`);
  const version = router.startsWith("https:") ? "h2" : "http/1.1";
  const other = protocols.filter((p) => p !== version);
  if (protocols.length < want || other.length > 0) {
    problems.push(`${name}: ${protocols.length} responses from ${router} (expected at least ${want}), `
      + `${other.length} not over ${version}: ${[...new Set(other)].join(", ")}`);
  }
  for (const transport of TRANSPORTS) {
    for (const instance of instances) {
      for (const [call, want] of Object.entries(expected(instance))) {
        const where = `${name}: ${transport} × ${instance} × ${call}`;
        const row = rows.find((r) => r.transport === transport && r.instance === instance && r.call === call);
        if (!row) {
          problems.push(`${where}: no row`);
          continue;
        }
        if (row.status !== want.status) {
          problems.push(`${where}: status ${row.status} (${row.error}), expected ${want.status}`);
          continue;
        }
        if (want.status === "ok") {
          if (!same(row.replies, want.replies)) {
            problems.push(`${where}: replies ${JSON.stringify(row.replies)}, expected ${JSON.stringify(want.replies)}`);
          }
          if (!same(row.answeredBy, want.answeredBy)) {
            problems.push(`${where}: answered by ${JSON.stringify(row.answeredBy)}, expected ${JSON.stringify(want.answeredBy)}`);
          }
        } else if (row.code !== want.code || !row.error.includes(want.error)) {
          problems.push(`${where}: failed with "${row.error}", expected ${want.code} with "${want.error}"`);
        }
      }
    }
  }
}

function checkDenied(rows) {
  if (rows.length === 0) problems.push("denied origin: the page shows no calls");
  // Blocked before the router answered: no reply and not the instance's
  // not_found either, only the browser's network error (Connect's unknown).
  for (const row of rows) {
    if (row.status !== "error" || row.code !== "unknown" || row.replies.length > 0) {
      problems.push(`denied origin: ${row.transport} × ${row.instance} × ${row.call} got through `
        + `(${row.status === "ok" ? "ok" : row.error}); CORS should have blocked it`);
    }
  }
  const blocked = logs.filter((l) => l.startsWith("[denied]") && l.includes("blocked by CORS policy"));
  if (blocked.length === 0) problems.push("denied origin: Chromium's console says nothing of CORS blocking the calls");
  return blocked.length;
}

function table(rows) {
  const lines = rows.map((r) => [
    r.transport, r.instance, r.call,
    r.status === "ok" ? "ok" : r.error,
    [...new Set(r.answeredBy)].join(",") + (r.answeredBy.length > 1 ? ` ×${r.answeredBy.length}` : ""),
    r.replies.join(" | "),
    r.millis,
  ]);
  const header = ["transport", "pinned to", "call", "status", "answered by", "replies", "time"];
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => String(l[i]).length)));
  const format = (l) => l.map((c, i) => String(c).padEnd(widths[i])).join("  ").trimEnd();
  return [format(header), format(widths.map((w) => "-".repeat(w))), ...lines.map(format)].join("\n");
}

const userDataDir = mkdtempSync(join(tmpdir(), "browser-test-profile-"));
let context;
let exitCode = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: args.chromium,
    headless: true,
    viewport: { width: 1280, height: 900 },
    // The TLS router's certificate is self-signed, made by .ci/browser.sh.
    ignoreHTTPSErrors: true,
    timeout,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  console.log(`browser: ${args.chromium} ${context.browser()?.version() ?? ""}`.trimEnd());

  for (const [i, url] of args.page.entries()) {
    const name = `allowed ${i + 1}`;
    const allowed = await load(context, name, url);
    checkAllowed(name, allowed);
    const versions = [...new Set(allowed.protocols)].join(", ");
    console.log(`${name}: page ${new URL(url).origin} → router ${allowed.router}: ${allowed.rows.length} calls `
      + `in ${allowed.seconds} s, ${allowed.protocols.length} responses over ${versions}`);
    console.log(table(allowed.rows));
    if (i === 0) {
      await allowed.page.screenshot({ path: args.screenshot, fullPage: true });
      const bytes = statSync(args.screenshot).size;
      const png = readFileSync(args.screenshot).subarray(0, 8).toString("latin1") === "\x89PNG\r\n\x1a\n";
      if (!png || bytes < MIN_SCREENSHOT_BYTES) {
        problems.push(`screenshot ${args.screenshot}: ${png ? "" : "not a PNG, "}${bytes} bytes (expected at least ${MIN_SCREENSHOT_BYTES})`);
      }
      console.log(`screenshot: ${args.screenshot} (${bytes} bytes)`);
    }
  }

  const denied = await load(context, "denied", args.denied);
  const blocked = checkDenied(denied.rows);
  console.log(`denied origin ${new URL(args.denied).origin}: ${denied.rows.length} calls, `
    + `${denied.rows.filter((r) => r.status === "error").length} failed, ${blocked} CORS errors in the console`);
  if (denied.rows[0]) console.log(`  first: ${denied.rows[0].transport} ${denied.rows[0].call}: ${denied.rows[0].error}`);
} catch (e) {
  problems.push(`the browser run failed: ${e instanceof Error ? e.message : String(e)}`);
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}

if (problems.length > 0) {
  console.error("\nbrowser: FAILED");
  for (const p of problems) console.error(`  - ${p}`);
  console.error("\nthe page's console and failed requests:");
  for (const l of logs) console.error(`  ${l}`);
  exitCode = 1;
} else {
  console.log(`browser: every call as expected (${TRANSPORTS.join(", ")} × ${instances.join(", ")}, `
    + `${args.page.length} router${args.page.length > 1 ? "s" : ""}), and none from the denied origin`);
}
process.exit(exitCode);
