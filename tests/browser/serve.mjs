// A static file server for the browser test's page (.ci/browser.sh), on two
// loopback ports: two origins, one the router allows (CORS) and one it
// does not. Node's standard library only.
//
//   node serve.mjs DIR
// prints `serving allowed=http://127.0.0.1:<port> denied=http://127.0.0.1:<port>`
// once both listen, and serves until it is killed.

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, resolve, sep } from "node:path";

const root = process.argv[2] && resolve(process.argv[2]);
if (!root) {
  console.error("usage: node serve.mjs DIR");
  process.exit(2);
}
const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".map": "application/json" };

function handle(request, response) {
  const path = normalize(decodeURIComponent(new URL(request.url, "http://x").pathname));
  const file = join(root, path === sep ? "index.html" : path);
  if (!file.startsWith(root + sep) || request.method !== "GET") {
    response.writeHead(404).end();
    return;
  }
  readFile(file).then(
    (body) => {
      response.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      response.end(body);
    },
    () => response.writeHead(404).end(),
  );
}

function listen() {
  return new Promise((resolve, reject) => {
    const server = createServer(handle);
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

const [allowed, denied] = await Promise.all([listen(), listen()]);
console.log(`serving allowed=${allowed} denied=${denied}`);
