// A small app backend for the hub (docs/integration.md), on node:http alone: the connect proxy signs users in
// from the connect's `data`, the subscribe proxy refuses one channel, the publish proxy rewrites data and
// refuses a bad word, an rpc method, a webhook endpoint (signatures checked, events deduplicated by id),
// the offline push hook and the refresh proxy. Run by tests/test_integration_reader.py against a real hub.
// Usage: REALTIME_SECRET=... node backend.mjs  -> prints "backend on PORT"; GET /log answers what it saw.
// LOSE_FIRST_WEBHOOK_ANSWER=1 takes the first webhook POST but answers 503, as if its answer were lost.
import crypto from "node:crypto";
import http from "node:http";

const secret = process.env.REALTIME_SECRET ?? "a-long-random-secret";
const users = { alice: "pw-alice", bob: "pw-bob" }; // the app's own credentials
const log = { connect: [], subscribe: [], publish: [], rpc: [], events: [], duplicates: 0, webhookIds: [], push: [], badSignatures: 0 };
let loseWebhookAnswer = process.env.LOSE_FIRST_WEBHOOK_ANSWER === "1";
const seen = new Set(); // webhook event ids already handled

function verify(headers, body, toleranceSeconds = 300) {
  const timestamp = headers["realtime-timestamp"] ?? "";
  if (!/^\d+$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSeconds) return false;
  const expected = crypto.createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest();
  return (headers["realtime-signature"] ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry.startsWith("v1="))
    .some((entry) => {
      const given = Buffer.from(entry.slice(3), "hex");
      return given.length === expected.length && crypto.timingSafeEqual(given, expected);
    });
}

const refuse = (code, message) => ({ error: { code, message } });

const routes = {
  "/realtime/connect"(req) {
    log.connect.push(req);
    const { user, password } = req.data ?? {};
    if (user in users && users[user] === password) {
      return { result: { user, info: { name: user }, expires: Math.floor(Date.now() / 1000) + 3600 } };
    }
    return refuse(1401, "bad credentials");
  },
  "/realtime/refresh"(req) {
    // A real backend checks that req.user's session still holds before extending it.
    return { result: { expires: Math.floor(Date.now() / 1000) + 3600 } };
  },
  "/realtime/subscribe"(req) {
    log.subscribe.push(req);
    return req.channel === "chat:secret" ? refuse(1403, "members only") : { result: {} };
  },
  "/realtime/publish"(req) {
    log.publish.push(req);
    const text = String(req.data?.text ?? "");
    if (/\bdarn\b/i.test(text)) return refuse(1400, "mind your language");
    return { result: { data: { ...req.data, checked: true } } };
  },
  "/realtime/rpc"(req) {
    log.rpc.push(req);
    if (req.method === "profile") return { result: { data: { name: "Bob", id: req.data?.id } } };
    return refuse(1404, "no such method");
  },
  "/realtime/events"(req, headers) {
    log.webhookIds.push(headers["realtime-id"]);
    for (const event of req.events) {
      if (seen.has(event.id)) log.duplicates += 1;
      else (seen.add(event.id), log.events.push(event));
    }
    if (loseWebhookAnswer) return (loseWebhookAnswer = false), 503; // taken, but the hub sees a failure
    return {};
  },
  "/realtime/push"(req) {
    log.push.push(req);
    return {};
  },
};

const server = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const send = (status, value) => {
      response.writeHead(status, { "Content-Type": "application/json" });
      response.end(JSON.stringify(value));
    };
    if (request.method === "GET" && request.url === "/log") return send(200, log);
    const route = routes[request.url];
    if (request.method !== "POST" || !route) return send(404, {});
    const body = Buffer.concat(chunks);
    if (!verify(request.headers, body)) {
      log.badSignatures += 1;
      return send(401, {}); // a 4xx: the hub does not retry it
    }
    const answer = route(JSON.parse(body.toString("utf8")), request.headers);
    if (typeof answer === "number") return send(answer, {});
    send(200, answer);
  });
});
server.listen(0, "127.0.0.1", () => console.log(`backend on ${server.address().port}`));
