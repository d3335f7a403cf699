// The console's figures, measured in Chromium against a release sessiond
// (scripts/bench-console.sh builds and runs this):
//
// 1. First page of an org with 10,000 live sessions: sign-in to the first
//    row, and a Refresh (ListSessions + render), against the same for an
//    org of 60 sessions (a full first page too) in the same store.
// 2. One ending made by another client (grpcurl LogoffOther) to its line in
//    `Endings`, timed in the page.
// 3. LogoutAll of 30,000 API sessions while the page is open: how long the
//    page takes to show all of them, the main thread's longest stall and
//    long-task time, DOM writes against events, and typing latency during
//    the burst, against the same probes over an idle stretch.

import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { ADMIN, OTHER_ORG_ADMIN, USER, grpc, launchBrowser, login, startSessiond } from "../test/harness.mjs";

const run = promisify(execFile);
const LOADGEN = process.env.SESSIOND_LOADGEN;
if (!process.env.SESSIOND_BIN || !LOADGEN) {
  console.error("set SESSIOND_BIN and SESSIOND_LOADGEN (release builds): see scripts/bench-console.sh");
  process.exit(2);
}
const ROUNDS = Number(process.env.ROUNDS ?? 7);
const FIRST = Number(process.env.FIRST_ORG_SESSIONS ?? 10_000);
const BULK = Number(process.env.BULK_SESSIONS ?? 30_000);

const NO_LIMITS = [
  "--max-sessions-per-user", "0", "--max-logins-per-user", "0", "--max-logins-per-address", "0",
  "--max-endings-per-user", "0", "--max-endings-per-address", "0",
];

const BIG_ORG = `${FIRST.toLocaleString("en-US")}-session org`;
/// The baseline: an org whose first page is as full (50 rows) as the big
/// one's, in the same store, so the ratio is the org's size alone.
const SMALL = 60;
const SMALL_ORG = `baseline org (${SMALL} sessions)`;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const ms = (x) => `${x.toFixed(1)} ms`;

/// `n` API sessions of `who` (joe), by the load generator (4 processes at once).
async function seed(server, n, who = USER) {
  const per = Math.ceil(n / 4);
  await Promise.all([0, 1, 2, 3].map(async (i) => {
    const count = Math.min(per, n - i * per);
    if (count <= 0) return;
    await run(LOADGEN, [
      "--mode", "login", "--target", `http://${server.grpc}`, "--tokens", String(count),
      "--user", who.username, "--password", who.password,
    ], { maxBuffer: 64 << 20 });
  }));
}

async function signedIn(browser, server, who) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(server.console);
  await page.getByLabel("Username").fill(who.username);
  await page.getByLabel("Password").fill(who.password);
  const t0 = Date.now();
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#sessions-body tr").first().waitFor();
  return { page, context, signInMs: Date.now() - t0 };
}

/// Refresh, timed in the page: click to the table written again (rows kept
/// are updated in place: their last-seen cells).
function timedRefresh(page) {
  return page.evaluate(() => new Promise((resolve) => {
    const body = document.getElementById("sessions-body");
    const t0 = performance.now();
    new MutationObserver((_, obs) => {
      obs.disconnect();
      resolve(performance.now() - t0);
    }).observe(body, { childList: true, subtree: true });
    document.getElementById("refresh").click();
  }));
}

async function firstPage(browser, server) {
  const out = {};
  for (const [label, who] of [[BIG_ORG, ADMIN], [SMALL_ORG, OTHER_ORG_ADMIN]]) {
    const signIns = [];
    const refreshes = [];
    for (let r = 0; r < ROUNDS; r++) {
      const { page, context, signInMs } = await signedIn(browser, server, who);
      signIns.push(signInMs);
      for (let i = 0; i < 3; i++) refreshes.push(await timedRefresh(page));
      await context.close();
    }
    out[label] = { signIn: median(signIns), signInMax: Math.max(...signIns), refresh: median(refreshes), refreshP90: pct(refreshes, 0.9) };
  }
  return out;
}

/// Epoch ms at which a line containing `needle` appeared in Endings.
function lineAppears(page, needle) {
  return page.evaluate((needle) => new Promise((resolve) => {
    const log = document.getElementById("endings");
    const obs = new MutationObserver(() => {
      if (log.textContent.includes(needle)) {
        obs.disconnect();
        resolve(performance.timeOrigin + performance.now());
      }
    });
    obs.observe(log, { childList: true, subtree: true, characterData: true });
  }), needle);
}

async function singleEndings(browser, server) {
  const { page, context } = await signedIn(browser, server, ADMIN);
  const admin = await login(server, ADMIN, "ADMIN");
  const lags = [];
  const fromStart = [];
  for (let i = 0; i < 30; i++) {
    const s = await login(server, USER, "IMAP");
    const seen = lineAppears(page, `#${s.id} `);
    const started = Date.now();
    await grpc(server, "LogoffOther", { sessionId: s.id, kind: "KIND_IMAP" }, admin.token);
    const returned = Date.now();
    const at = await seen;
    lags.push(at - returned);
    fromStart.push(at - started);
  }
  await context.close();
  return {
    p50: median(lags), p90: pct(lags, 0.9), max: Math.max(...lags),
    startP50: median(fromStart), startMax: Math.max(...fromStart),
  };
}

/// Probes in the page: event-loop stalls (a 10 ms timer's lateness), long
/// tasks, and DOM writes to the log and the table.
function installProbes(page) {
  return page.evaluate(() => {
    const w = window;
    w.__probe = { maxLate: 0, longTotal: 0, longMax: 0, writes: 0 };
    let expected = performance.now() + 10;
    setInterval(() => {
      const now = performance.now();
      w.__probe.maxLate = Math.max(w.__probe.maxLate, now - expected);
      expected = now + 10;
    }, 10);
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        w.__probe.longTotal += e.duration;
        w.__probe.longMax = Math.max(w.__probe.longMax, e.duration);
      }
    }).observe({ type: "longtask", buffered: false });
    const count = (records) => (w.__probe.writes += records.length);
    new MutationObserver(count).observe(document.getElementById("endings"), { childList: true, subtree: true, characterData: true });
    new MutationObserver(count).observe(document.getElementById("sessions-body"), { childList: true });
  });
}

function resetProbes(page) {
  return page.evaluate(() => Object.assign(window.__probe, { maxLate: 0, longTotal: 0, longMax: 0, writes: 0 }));
}

/// Key presses into the User field while `busy` runs, each timed from the
/// press to the field holding the new character.
async function typing(page, busy) {
  const field = page.getByLabel("User");
  await field.fill("");
  const lags = [];
  let done = false;
  const typist = (async () => {
    while (!done) {
      const t0 = Date.now();
      await field.press("a");
      await page.waitForFunction((n) => document.getElementById("filter-user").value.length >= n, lags.length + 1, { polling: "raf" });
      lags.push(Date.now() - t0);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const result = await busy();
  done = true;
  await typist;
  await field.fill("");
  return { result, typing: { n: lags.length, p50: median(lags), max: Math.max(...lags) } };
}

async function bulkEnding(browser, server) {
  const { page, context } = await signedIn(browser, server, ADMIN);
  // The dialog counts what LogoutAll would end (ListSessions, 1,000 a page).
  const t0 = Date.now();
  await page.getByRole("button", { name: "End all API sessions" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Confirm" }).waitFor({ state: "visible" });
  await page.waitForFunction(() => !document.getElementById("confirm-button").disabled);
  const countMs = Date.now() - t0;
  const countText = await page.locator("#confirm-text").innerText();
  await page.getByRole("dialog").getByRole("button", { name: "Cancel" }).click();
  await installProbes(page);
  // Idle baseline: the same probes and typing over 3 s with nothing happening.
  await resetProbes(page);
  const idle = await typing(page, () => new Promise((r) => setTimeout(r, 3000)));
  const idleProbe = await page.evaluate(() => ({ ...window.__probe }));
  await resetProbes(page);
  const needle = `${BULK.toLocaleString("en-US")} API sessions`;
  const burst = await typing(page, async () => {
    const seen = lineAppears(page, needle);
    const t0 = Date.now();
    const res = await grpc(server, "LogoutAll", { username: ADMIN.username, password: ADMIN.password });
    const returned = Date.now();
    const all = await seen;
    return { ended: res.ended, logoutAllMs: returned - t0, allShownAfterReturnMs: all - returned, allShownAfterStartMs: all - t0 };
  });
  const burstProbe = await page.evaluate(() => ({ ...window.__probe }));
  // The emptied page fills again with what is left (the admins' sessions).
  await page.waitForTimeout(1500);
  const rowsLeft = await page.locator("#sessions-body tr").count();
  await context.close();
  return { idle: { ...idleProbe, typing: idle.typing }, burst: { ...burstProbe, typing: burst.typing }, ...burst.result, rowsLeft, countMs, countText };
}

/// The same LogoutAll made from the page itself: `End all API sessions`,
/// the dialog's count, `Confirm`; then the page reloads its table and reads
/// the burst of its own ending.
async function bulkFromThePage(browser, server) {
  const { page, context } = await signedIn(browser, server, ADMIN);
  await installProbes(page);
  const needle = `${BULK.toLocaleString("en-US")} API sessions`;
  await page.getByRole("button", { name: "End all API sessions" }).click();
  await page.waitForFunction(() => !document.getElementById("confirm-button").disabled);
  await resetProbes(page);
  const seen = lineAppears(page, needle);
  const t0 = Date.now();
  await page.getByRole("dialog").getByRole("button", { name: "Confirm" }).click();
  // Typing starts once the (modal) dialog has closed.
  const result = await typing(page, async () => {
    await page.waitForFunction((n) => document.getElementById("status").textContent.includes(`Ended ${n} API sessions`), needle.split(" ")[0]);
    const answered = Date.now();
    const all = await seen;
    return { answeredMs: answered - t0, allShownMs: all - t0 };
  });
  const probe = await page.evaluate(() => ({ ...window.__probe }));
  await context.close();
  return { ...result.result, ...probe, typing: result.typing };
}

const server = await startSessiond({ extra: NO_LIMITS });
const browser = await launchBrowser();
try {
  process.stderr.write(`seeding ${FIRST} API sessions…\n`);
  await seed(server, FIRST);
  await seed(server, SMALL, { username: "useremail@company.com", password: "mypassword" });
  const first = await firstPage(browser, server);
  console.log(`\n## First page (${ROUNDS} sign-ins, ${ROUNDS * 3} refreshes each; medians)`);
  for (const [label, r] of Object.entries(first)) {
    console.log(`${label}: sign-in to first row ${ms(r.signIn)} (max ${ms(r.signInMax)}); refresh ${ms(r.refresh)} (p90 ${ms(r.refreshP90)})`);
  }
  const big = first[BIG_ORG];
  const small = first[SMALL_ORG];
  console.log(`ratio ${BIG_ORG} / baseline: sign-in ${(big.signIn / small.signIn).toFixed(2)}x, refresh ${(big.refresh / small.refresh).toFixed(2)}x`);

  const single = await singleEndings(browser, server);
  console.log(`\n## One ending by another client (grpcurl LogoffOther) to its line in Endings (30)`);
  console.log(`after the call returned: p50 ${ms(single.p50)}, p90 ${ms(single.p90)}, max ${ms(single.max)} (negative: shown before grpcurl had exited)`);
  console.log(`after grpcurl was started: p50 ${ms(single.startP50)}, max ${ms(single.startMax)}`);

  process.stderr.write(`seeding to ${BULK} API sessions…\n`);
  await seed(server, BULK - FIRST);
  const bulk = await bulkEnding(browser, server);
  console.log(`\n## LogoutAll of ${bulk.ended.toLocaleString("en-US")} API sessions with the console open`);
  console.log(`the dialog's count ("${bulk.countText}"): ready ${ms(bulk.countMs)} after the click`);
  console.log(`LogoutAll call: ${ms(bulk.logoutAllMs)}; all ${bulk.ended} shown in Endings ${ms(bulk.allShownAfterReturnMs)} after it returned (${ms(bulk.allShownAfterStartMs)} after it started)`);
  console.log(`DOM writes (log + table): ${bulk.burst.writes} for ${bulk.ended} events; rows on the page 1.5 s later: ${bulk.rowsLeft} (the admins' sessions)`);
  console.log(`main thread, idle 3 s vs burst: longest timer lateness ${ms(bulk.idle.maxLate)} vs ${ms(bulk.burst.maxLate)}; long tasks ${ms(bulk.idle.longTotal)} vs ${ms(bulk.burst.longTotal)} (longest ${ms(bulk.burst.longMax)})`);
  console.log(`typing into User: idle p50 ${ms(bulk.idle.typing.p50)} max ${ms(bulk.idle.typing.max)} (${bulk.idle.typing.n} keys); burst p50 ${ms(bulk.burst.typing.p50)} max ${ms(bulk.burst.typing.max)} (${bulk.burst.typing.n} keys)`);

  process.stderr.write(`seeding ${BULK} API sessions again…\n`);
  await seed(server, BULK);
  const own = await bulkFromThePage(browser, server);
  console.log(`\n## The same LogoutAll from the page (End all API sessions → Confirm)`);
  console.log(`Confirm to "Ended ${BULK.toLocaleString("en-US")} API sessions": ${ms(own.answeredMs)}; to all shown in Endings: ${ms(own.allShownMs)}`);
  console.log(`DOM writes: ${own.writes}; long tasks ${ms(own.longTotal)} (longest ${ms(own.longMax)}); longest timer lateness ${ms(own.maxLate)}; typing p50 ${ms(own.typing.p50)} max ${ms(own.typing.max)} (${own.typing.n} keys)`);
} finally {
  await browser.close();
  await server.dispose();
}
