// The demo chat page (realtime/demo/, served by `realtime serve --demo`) in headless Chromium: two
// pages signed in as two users in the same room talk to each other through a real hub.
// Screenshots go to test/browser/output/ (not committed).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startHub } from "../hub.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const output = join(here, "output");
const repo = join(here, "..", "..", "..", "..");
const WAIT = { timeout: 15_000 }; // every wait for the page is bounded by this
const HISTORY = 60; // messages posted before the second user arrives: more than one page (25)

test("two users talk through the demo page", async (t) => {
  mkdirSync(output, { recursive: true });
  const hub = await startHub({ config: { demo: true } });
  t.after(() => hub.stop());
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox"],
  });
  t.after(() => browser.close());

  // Anything the page logs as an error (an exception, a CSP violation, a failed request) fails the test.
  const problems = [];
  let restarting = false; // from then on, failed WebSocket handshakes are expected
  async function open(user) {
    const context = await browser.newContext({ viewport: { width: 1000, height: 600 } });
    const page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`${user}: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      if (restarting && message.text().startsWith("WebSocket connection to")) return;
      problems.push(`${user}: ${message.text()}`);
    });
    await page.goto(`${hub.httpUrl}/demo?user=${user}&room=lobby`);
    await page.locator("#status[data-state=connected]").waitFor(WAIT);
    await page.locator("#presence li", { hasText: user }).waitFor(WAIT);
    return page;
  }
  // The message whose text is exactly `text` ("earlier 1" is not "earlier 10").
  const messages = (page, text) =>
    page.locator("#message-list li").filter({ has: page.locator(".text").getByText(text, { exact: true }) });

  const alice = await open("alice");
  // History for bob to scroll through, sent the way the page's console invites a developer to.
  await alice.evaluate(async (count) => {
    for (let i = 1; i <= count; i++) await window.demo.client.publish("chat:lobby", { text: `earlier ${i}` });
  }, HISTORY);
  await messages(alice, `earlier ${HISTORY}`).waitFor(WAIT);

  const bob = await open("bob");
  await t.test("bob sees the newest messages, and both see each other present", async () => {
    await messages(bob, `earlier ${HISTORY}`).waitFor(WAIT);
    assert.equal(await messages(bob, "earlier 1").count(), 0); // not loaded yet: one page only
    await alice.locator("#presence li", { hasText: "bob" }).waitFor(WAIT);
    await bob.locator("#presence li", { hasText: "alice" }).waitFor(WAIT);
  });

  await t.test("alice sees bob typing", async () => {
    await bob.locator("#text").pressSequentially("hello al");
    await alice.locator("#typing", { hasText: "bob is typing" }).waitFor(WAIT);
  });

  await t.test("bob's message reaches alice, and the typing indicator goes", async () => {
    await bob.locator("#text").pressSequentially("ice");
    await bob.locator("#text").press("Enter");
    await messages(alice, "hello alice").waitFor(WAIT);
    assert.equal(await messages(alice, "hello alice").locator(".who").textContent(), "bob");
    await alice.locator("#typing", { hasText: "typing" }).waitFor({ ...WAIT, state: "detached" });
  });

  await t.test("bob sees alice's read receipt under his message", async () => {
    await messages(bob, "hello alice").locator(".seen", { hasText: "seen by alice" }).waitFor(WAIT);
  });

  await t.test("alice's reply reaches bob, and alice sees bob's receipt", async () => {
    await alice.locator("#text").fill("hi bob");
    await alice.locator("#compose button").click();
    await messages(bob, "hi bob").waitFor(WAIT);
    await messages(alice, "hi bob").locator(".seen", { hasText: "seen by bob" }).waitFor(WAIT);
  });

  await t.test("scrolling up loads older messages", async () => {
    await bob.locator("#messages").evaluate((box) => { box.scrollTop = 0; });
    await messages(bob, "earlier 30").waitFor(WAIT); // the next page back
    // Further up until the start of the room: each page is inserted above the messages on screen.
    for (let pages = 0; pages < 5 && (await messages(bob, "earlier 1").count()) === 0; pages++) {
      const shown = await bob.locator("#message-list li").count();
      await bob.locator("#messages").evaluate((box) => { box.scrollTop = 0; });
      await bob.waitForFunction((n) => document.querySelectorAll("#message-list li").length > n, shown, WAIT);
    }
    await messages(bob, "earlier 1").waitFor(WAIT);
    await bob.locator("#history-state", { hasText: "the start of #lobby" }).waitFor(WAIT);
    const offsets = await bob.locator("#message-list li").evaluateAll((items) => items.map((li) => Number(li.dataset.offset)));
    assert.equal(offsets.length, HISTORY + 2);
    assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b)); // in order, no duplicates
    assert.equal(new Set(offsets).size, offsets.length);
  });

  await t.test("the scoreboard follows clicks on both pages", async () => {
    const points = (page, team, value) =>
      page.locator(`#scores tr[data-team=${team}] .points`, { hasText: new RegExp(`^${value}$`) });
    await bob.locator("#scores tr[data-team=cats] button").click();
    await points(alice, "cats", 1).waitFor(WAIT);
    await alice.locator("#scores tr[data-team=cats] button").click();
    await points(alice, "cats", 2).waitFor(WAIT);
    await alice.locator("#scores tr[data-team=dogs] button").click();
    await points(bob, "cats", 2).waitFor(WAIT);
    await points(bob, "dogs", 1).waitFor(WAIT);
  });

  await t.test("a room of its own: bob's message in #random does not reach alice in #lobby", async () => {
    await bob.locator("#rooms a", { hasText: "#random" }).click();
    await bob.locator("#room-title", { hasText: "#random" }).waitFor(WAIT);
    await bob.locator("#history-state", { hasText: "the start of #random" }).waitFor(WAIT);
    assert.equal(await bob.locator("#message-list li").count(), 0);
    await bob.locator("#presence li", { hasText: "bob" }).waitFor(WAIT);
    assert.equal(await bob.locator("#presence li").count(), 1);
    await bob.locator("#text").fill("anyone here?");
    await bob.locator("#text").press("Enter");
    await messages(bob, "anyone here?").waitFor(WAIT);
    await bob.locator("#rooms a", { hasText: "#lobby" }).click();
    await messages(bob, "hi bob").waitFor(WAIT);
    assert.equal(await messages(alice, "anyone here?").count(), 0);
  });

  // The picture in the docs: alice's page, with bob's receipt and bob typing again.
  await bob.locator("#messages").evaluate((box) => { box.scrollTop = box.scrollHeight; });
  await bob.locator("#text").pressSequentially("see you");
  await alice.locator("#typing", { hasText: "bob is typing" }).waitFor(WAIT);
  await alice.screenshot({ path: join(output, "demo-alice.png") });
  await bob.screenshot({ path: join(output, "demo-bob.png") });
  // UPDATE_DEMO_IMAGE=1 npm run test:demo refreshes the committed one (docs/images/demo.png).
  if (process.env.UPDATE_DEMO_IMAGE) await alice.screenshot({ path: join(repo, "docs", "images", "demo.png") });

  await t.test("after a hub restart lost the room, both pages load it afresh", async () => {
    restarting = true;
    await hub.restart(); // the memory engine starts empty: a new epoch, nothing to recover
    const reconnect = { timeout: 30_000 }; // the SDK's backoff, with jitter
    await messages(bob, "hi bob").waitFor({ ...reconnect, state: "detached" });
    await messages(alice, "hi bob").waitFor({ ...reconnect, state: "detached" });
    await alice.locator("#status[data-state=connected]").waitFor(WAIT);
    await alice.locator("#text").fill("after the restart");
    await alice.locator("#text").press("Enter");
    await messages(bob, "after the restart").waitFor(WAIT);
    assert.equal(await bob.locator("#message-list li").count(), 1);
    await bob.locator("#presence li", { hasText: "alice" }).waitFor(WAIT);
    await alice.locator("#presence li", { hasText: "bob" }).waitFor(WAIT);
  });

  assert.deepEqual(problems, []);
});
