// The SDK's browser bundle in headless Chromium (Debian's, driven by playwright-core: no browser download):
// a page on its own origin connects to a hub with each codec, subscribes, publishes and receives; then the hub
// is killed (the sockets drop for real), publications are made through a second hub on the same Redis while it
// is down, and the restarted hub must give every page client what it missed: `recovered: true`, each offset
// once, in order. A screenshot of the page is saved to test/browser/output/roundtrip.png. Also: the page loads
// both bundles (ESM and the IIFE's global `Realtime`), and a page on an origin the hub's `allowed_origins` does
// not list is refused (403), which the browser shows the page only as close 1006.
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startHub } from "../hub.mjs";
import { serveStatic } from "./static.mjs";

const OUTPUT = fileURLToPath(new URL("./output/", import.meta.url));
const WAIT = { timeout: 20_000, polling: 50 }; // every wait on the page is bounded
const CODECS = ["msgpack", "json"];
const CHANNEL = "chat:roundtrip";

let site, hub, publisher, browser, page;
const pageErrors = [];

before(async () => {
  site = await serveStatic();
  // The page's origin differs from the hub's (another port): a browser sends it and the hub checks it, so it
  // must be allowed, else the upgrade is refused with 403 (seen by the page only as close 1006).
  const config = { allowed_origins: [site.origin] };
  hub = await startHub({ redis: true, config });
  publisher = await startHub({ config: { ...config, redis: hub.redisUrl } });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox"],
  });
  page = await browser.newPage({ viewport: { width: 900, height: 420 } });
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  // Chromium logs each refused reconnect while the hub is down as a console error: expected, not a page error.
  page.on("console", (message) => {
    if (message.type() === "error" && !/^WebSocket connection to .* failed/.test(message.text())) pageErrors.push(message.text());
  });
  await page.goto(`${site.origin}/test/browser/page/roundtrip.html`);
  await page.waitForFunction(() => document.documentElement.dataset.ready === "true", null, WAIT);
});

after(async () => {
  await page?.evaluate(() => window.roundtrip?.close()).catch(() => {});
  await browser?.close();
  await publisher?.stop();
  await hub?.stop();
  await site?.close();
});

test("the page loads both browser bundles", async () => {
  assert.equal(await page.evaluate(() => typeof window.Realtime?.Client), "function", "the IIFE's global Realtime");
  assert.equal(await page.evaluate(() => typeof window.roundtrip?.start), "function", "the page's ESM import");
});

test("a page on an origin the hub does not allow sees only close 1006", async () => {
  // Same files, another origin: localhost instead of 127.0.0.1 (the hub answers 403, which a browser hides).
  const other = await browser.newPage();
  try {
    await other.goto(`${site.origin.replace("127.0.0.1", "localhost")}/test/browser/page/roundtrip.html`);
    await other.waitForFunction(() => document.documentElement.dataset.ready === "true", null, WAIT);
    assert.deepEqual(await other.evaluate((url) => window.roundtrip.probe(url), publisher.url), { opened: false, code: 1006 });
    assert.deepEqual(await page.evaluate((url) => window.roundtrip.probe(url), publisher.url), { opened: true, code: 1000 });
  } finally {
    await other.close();
  }
});

const summary = () => page.evaluate(() => window.roundtrip.summary());

test("a page subscribes, publishes, and recovers what it missed while the hub was down", async () => {
  for (const codec of CODECS) {
    await page.evaluate(([name, url, codec, channel]) => window.roundtrip.start(name, url, codec, channel), [
      codec,
      hub.url,
      codec,
      CHANNEL,
    ]);
  }
  await page.evaluate((url) => window.roundtrip.start("publisher", url, "msgpack"), publisher.url);

  // Each page client publishes once; both receive both.
  for (const codec of CODECS) {
    await page.evaluate(([name, channel, data]) => window.roundtrip.publish(name, channel, data), [
      codec,
      CHANNEL,
      { text: `hello from ${codec}`, n: 1 },
    ]);
  }
  const received = (count) =>
    page.waitForFunction(
      (count) => Object.values(window.roundtrip.summary()).every((peer) => peer.offsets.length >= count),
      count,
      WAIT,
    );
  await received(2);

  // The hub dies: the page's sockets drop. Publications go on through the other hub meanwhile.
  await hub.kill();
  await page.waitForFunction(
    () => Object.values(window.roundtrip.summary()).every((peer) => peer.disconnects > 0 && peer.state !== "connected"),
    null,
    WAIT,
  );
  for (let n = 2; n <= 4; n += 1) {
    await page.evaluate(([channel, data]) => window.roundtrip.publish("publisher", channel, data), [
      CHANNEL,
      { text: "while you were away", n },
    ]);
  }

  // Back on the same port: each client reconnects, resubscribes from its offset and gets the three it missed.
  await hub.restart();
  await received(5);
  await page.waitForFunction(
    () => Object.values(window.roundtrip.summary()).every((peer) => peer.resubscribed.length > 0 && peer.state === "connected"),
    null,
    WAIT,
  );
  // Live again after recovery: one more from each.
  for (const codec of CODECS) {
    await page.evaluate(([name, channel, data]) => window.roundtrip.publish(name, channel, data), [
      codec,
      CHANNEL,
      { text: `back from ${codec}`, n: 5 },
    ]);
  }
  await received(7);

  await mkdir(OUTPUT, { recursive: true });
  await page.screenshot({ path: `${OUTPUT}roundtrip.png` });

  const expected = [
    { text: "hello from msgpack", n: 1 },
    { text: "hello from json", n: 1 },
    { text: "while you were away", n: 2 },
    { text: "while you were away", n: 3 },
    { text: "while you were away", n: 4 },
    { text: "back from msgpack", n: 5 },
    { text: "back from json", n: 5 },
  ];
  const seen = await summary();
  assert.deepEqual(Object.keys(seen).sort(), [...CODECS].sort());
  for (const codec of CODECS) {
    const peer = seen[codec];
    assert.deepEqual(peer.offsets, [1, 2, 3, 4, 5, 6, 7], `${codec}: each offset once, in order`);
    assert.deepEqual(peer.data, expected, `${codec}: the data as published`);
    assert.deepEqual(peer.resubscribed, [true], `${codec}: one resubscribe, recovered`);
    assert.equal(peer.recovered, true, codec);
    assert.equal(peer.unrecovered, 0, codec);
    assert.equal(peer.state, "connected", codec);
  }
  assert.deepEqual(pageErrors, []);
});
