// What the browser tests share: a real `sessiond serve --demo` of this build
// on free loopback ports (SESSIOND_BIN; `cargo nextest run` passes it), a
// real gRPC client beside the page (grpcurl, over server reflection), and
// Debian's Chromium driven by Playwright.

import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before } from "node:test";
import { chromium } from "playwright-core";

const run = promisify(execFile);

export const SESSIOND = process.env.SESSIOND_BIN ?? new URL("../../target/debug/sessiond", import.meta.url).pathname;
export const LOADGEN = process.env.SESSIOND_LOADGEN ?? new URL("../../target/debug/sessiond-loadgen", import.meta.url).pathname;
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const GRPCURL = process.env.GRPCURL ?? "grpcurl";

export const ADMIN = { username: "domain_admin@example.com", password: "pencil75" };
export const USER = { username: "joe_user@example.com", password: "joe-pass-1" };
export const OTHER_ORG_ADMIN = { username: "admin@company.com", password: "admin-pass-1" };

const CHEAP_HASH = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];

/// A free loopback port (bound once, then let go).
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/// A store directory of its own; `users` are added (CLI, password on stdin)
/// before the first start.
export async function newStore(users = []) {
  const dir = await mkdtemp(join(tmpdir(), "sessiond-console-"));
  const store = `sqlite://${join(dir, "sessions.db")}`;
  for (const u of users) {
    await sessiondCli(["user", "add", u.username, "--org", u.org, "--role", u.role ?? "user", "--create", "--store", store], `${u.password}\n`);
  }
  return { dir, store, remove: () => rm(dir, { recursive: true, force: true }) };
}

/// Runs the sessiond CLI to its end; resolves with its output.
export function sessiondCli(args, stdin = "") {
  return new Promise((resolve, reject) => {
    const child = spawn(SESSIOND, args, { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`sessiond ${args.join(" ")}: exit ${code}\n${out}`))));
    child.stdin.end(stdin);
  });
}

/// `sessiond serve --demo` on `store`, on the given ports or free ones.
export async function startSessiond({ store, grpcPort, restPort, extra = [] } = {}) {
  const own = store === undefined ? await newStore() : null;
  const storeUrl = store ?? own.store;
  grpcPort ??= await freePort();
  restPort ??= await freePort();
  const args = [
    "serve", "--demo", "--store", storeUrl,
    "--grpc-addr", `127.0.0.1:${grpcPort}`,
    "--rest-addr", `127.0.0.1:${restPort}`,
    ...CHEAP_HASH, ...extra,
  ];
  const child = spawn(SESSIOND, args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "info" } });
  let log = "";
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sessiond did not start:\n${log}`)), 30_000);
    child.stderr.on("data", (d) => {
      log += d;
      if (log.includes("rest listening on") && log.includes("grpc listening on")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`sessiond exited (${code}) at start:\n${log}`));
    });
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return {
    store: storeUrl,
    grpcPort,
    restPort,
    grpc: `127.0.0.1:${grpcPort}`,
    rest: `http://127.0.0.1:${restPort}`,
    console: `http://127.0.0.1:${restPort}/console/`,
    log: () => log,
    /// SIGTERM, and wait for the exit.
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
    async dispose() {
      await this.stop();
      await own?.remove();
    },
  };
}

/// A sessiond that the test stops and starts again, on the same store and
/// ports; both are stopped, and the store removed, when the test ends.
export async function restartable(t) {
  const first = await startSessiond();
  let again;
  t.after(async () => {
    await again?.stop();
    await first.dispose();
  });
  return {
    first,
    async restart() {
      const { store, grpcPort, restPort } = first;
      again = await startSessiond({ store, grpcPort, restPort });
      return again;
    },
  };
}

/// One call with grpcurl (a gRPC client that is not ours), as JSON.
export async function grpc(server, method, body = {}, token) {
  const args = ["-plaintext", "-format-error", "-d", JSON.stringify(body)];
  if (token) args.push("-H", `authorization: Bearer ${token}`);
  args.push(server.grpc, `session.v1.SessionService/${method}`);
  try {
    const { stdout } = await run(GRPCURL, args);
    return stdout.trim() === "" ? {} : JSON.parse(stdout);
  } catch (err) {
    // -format-error: the status as JSON, on stdout or stderr by version.
    const said = err.stdout || err.stderr || err.message;
    const e = new Error(`grpcurl ${method}: ${said}`);
    try {
      e.grpc = JSON.parse(said);
    } catch {
      // Not a status: the message says what happened.
    }
    throw e;
  }
}

/// A session of `kind` (ADMIN, API, IMAP, POP) opened over gRPC.
export async function login(server, who, kind, userAgent = "grpcurl test client") {
  const res = await grpc(server, "Login", {
    username: who.username,
    password: who.password,
    kind: `KIND_${kind}`,
    client: { userAgent },
  });
  return { token: res.token, id: res.session.id, session: res.session };
}

/// Whether a token is still live (ValidateSession).
export async function isLive(server, token) {
  try {
    await grpc(server, "ValidateSession", { token });
    return true;
  } catch (err) {
    if (err.grpc?.code === 16) return false; // UNAUTHENTICATED
    throw err;
  }
}

/// Debian's Chromium, headless, started as this machine needs it.
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/// One Chromium for every test of the file that calls this; the getter
/// returns it once started.
export function sharedBrowser() {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });
  return () => browser;
}

/// A fresh page of `browser` that fails the test on any page error or
/// dialog (an `alert` would mean injected script ran).
export async function openPage(browser, t) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("dialog", async (d) => {
    problems.push(`a ${d.type()} dialog opened: ${d.message()}`);
    await d.dismiss();
  });
  t.after(async () => {
    await context.close();
  });
  return { page, context, problems };
}

/// Signs in through the form, as a person would (mouse).
export async function signIn(page, server, who = ADMIN) {
  await page.goto(server.console);
  await page.getByLabel("Username").fill(who.username);
  await page.getByLabel("Password").fill(who.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Sessions", level: 1 }).waitFor();
}

/// The table's body rows.
export function sessionRows(page) {
  return page.locator("#sessions-table tbody tr");
}

/// The row of session `id`.
export function rowOf(page, id) {
  return page.locator(`#sessions-table tbody tr[data-id="${id}"]`);
}

/// Presses Tab until `locator` has the focus (at most `max` times).
export async function tabTo(page, locator, max = 60) {
  for (let i = 0; i < max; i++) {
    if (await locator.evaluate((n) => n === document.activeElement).catch(() => false)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`Tab never reached ${locator}`);
}

/// Waits until `check` holds (polled every 25 ms), or fails saying `what`.
/// The bound is generous: tests say what happens, benchmarks say how fast.
export async function until(check, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}
