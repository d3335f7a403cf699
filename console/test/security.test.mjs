// The console is safe by construction: served with a strict policy from its
// own origin only, every API value shown as text, one answer for every
// refused sign-in, and the server's "wait" (RESOURCE_EXHAUSTED, OVERLOADED,
// UNAVAILABLE) shown as what it is and honoured.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import {
  ADMIN, LOADGEN, USER, sharedBrowser, login, newStore, openPage, rowOf, signIn, restartable, startSessiond, until,
} from "./harness.mjs";

const browser = sharedBrowser();

test("the page and its files come with a strict policy, and nothing else is served", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const page = await fetch(server.console);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  const csp = page.headers.get("content-security-policy");
  for (const directive of ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"]) {
    assert.ok(csp.includes(directive), `${directive} in ${csp}`);
  }
  assert.ok(!csp.includes("unsafe"), "no unsafe-inline or unsafe-eval");
  assert.equal(page.headers.get("x-content-type-options"), "nosniff");
  const html = await page.text();
  assert.ok(!/<script>|<script [^>]*>[^<]/.test(html), "no inline script");
  assert.ok(!/https?:\/\//.test(html), "no other origin");
  for (const [file, type] of [["console.js", "text/javascript"], ["console.css", "text/css"], ["icon.svg", "image/svg+xml"]]) {
    const res = await fetch(`${server.console}${file}`);
    assert.equal(res.status, 200, file);
    assert.ok(res.headers.get("content-type").startsWith(type), file);
    assert.equal(res.headers.get("x-content-type-options"), "nosniff", file);
    const again = await fetch(`${server.console}${file}`, { headers: { "if-none-match": res.headers.get("etag") } });
    assert.equal(again.status, 304, `${file} revalidates`);
  }
  const js = await (await fetch(`${server.console}console.js`)).text();
  assert.ok(!/localStorage|innerHTML|outerHTML|insertAdjacentHTML|document\.write/.test(js), "no HTML sinks, no localStorage");
  assert.equal((await fetch(`${server.console}../Cargo.toml`)).status, 404);
  assert.equal((await fetch(`${server.console}nothing.js`)).status, 404);
  const bare = await fetch(`${server.rest}/console`, { redirect: "manual" });
  assert.equal(bare.status, 308);
  assert.equal(bare.headers.get("location"), "/console/");
});

test("values from the API are shown as text: an HTML username and user agent run nothing", async (t) => {
  const xss = { username: "<img/src=x/onerror=alert(1)>", password: "xss-pass-1", org: "example.com" };
  const store = await newStore([xss]);
  const server = await startSessiond({ store: store.store });
  t.after(async () => {
    await server.stop();
    await store.remove();
  });
  const agent = "<img src=x onerror=alert(1)>";
  const s = await login(server, xss, "API", agent);
  const { page, problems } = await openPage(browser(), t);
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  await signIn(page, server);
  const row = rowOf(page, s.id);
  await row.waitFor();
  const cells = await row.locator("td").allInnerTexts();
  assert.equal(cells[0], xss.username);
  assert.equal(cells[5], agent);
  assert.equal(await page.locator("main img").count(), 0, "no element made from a value");
  await page.getByLabel("User").fill(xss.username);
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByRole("button", { name: "End all sessions of user" }).click();
  await until(async () => (await page.getByRole("dialog").innerText()).includes(`1 session of ${xss.username}`), "the name as text");
  await page.getByRole("dialog").getByRole("button", { name: "Confirm" }).click();
  await row.waitFor({ state: "detached" });
  await until(async () => (await page.getByRole("log", { name: "Endings" }).innerText()).includes(xss.username), "the name in Endings");
  assert.equal(await page.locator("img").count(), 0);
  const origin = new URL(server.console).origin;
  assert.deepEqual(requests.filter((u) => new URL(u).origin !== origin), [], "no other origin");
  assert.deepEqual(problems, [], "no alert, no page error");
});

test("a wrong password and a non-admin get the same one message", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const { page, problems } = await openPage(browser(), t);
  const messages = [];
  for (const who of [{ ...ADMIN, password: "wrong-password" }, USER, { username: "nobody@example.com", password: "x" }]) {
    await page.goto(server.console);
    await page.getByLabel("Username").fill(who.username);
    await page.getByLabel("Password").fill(who.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await until(async () => (await page.getByRole("alert").innerText()) !== "", "a message");
    messages.push(await page.getByRole("alert").innerText());
    assert.equal(await page.getByLabel("Password").inputValue(), "", "the password is cleared");
  }
  assert.equal(new Set(messages).size, 1, `one message: ${messages.join(" | ")}`);
  assert.match(messages[0], /Sign-in failed/);
  assert.deepEqual(problems, []);
});

test("a lockout (RESOURCE_EXHAUSTED) is shown with its wait, and Sign in waits that long", async (t) => {
  const server = await startSessiond({
    extra: ["--max-failures-per-user", "2", "--failure-window-secs", "3"],
  });
  t.after(() => server.dispose());
  const { page, problems } = await openPage(browser(), t);
  await page.goto(server.console);
  const button = page.getByRole("button", { name: "Sign in" });
  for (let i = 0; i < 3; i++) {
    await page.getByLabel("Username").fill(ADMIN.username);
    await page.getByLabel("Password").fill("wrong-password");
    await until(() => button.isEnabled(), "Sign in enabled");
    await button.click();
    await until(async () => (await page.getByRole("alert").innerText()) !== "", "a message");
    if ((await page.getByRole("alert").innerText()).includes("Too many")) break;
    await page.evaluate(() => (document.getElementById("signin-message").textContent = ""));
  }
  assert.match(await page.getByRole("alert").innerText(), /Too many requests: try again in \d s\./);
  assert.equal(await button.isDisabled(), true, "Sign in waits as asked");
  await until(() => button.isEnabled(), "Sign in again after the wait", 10_000);
  await page.getByLabel("Username").fill(ADMIN.username);
  await page.getByLabel("Password").fill(ADMIN.password);
  await button.click();
  await page.getByRole("heading", { name: "Sessions", level: 1 }).waitFor();
  assert.deepEqual(problems, []);
});

test("a shed call (OVERLOADED) is shown as such, and retried after the wait it names", async (t) => {
  // One call in flight at a time, and a flood of validations beside the
  // page (sessiond's own load generator): most of the page's calls are shed.
  const server = await startSessiond({ extra: ["--max-in-flight", "1"] });
  const flood = spawn(LOADGEN, [
    "--mode", "validate", "--target", `http://${server.grpc}`, "--concurrency", "64",
    "--duration", "60", "--warmup", "0", "--tokens", "4",
  ], { stdio: "ignore" });
  t.after(async () => {
    flood.kill("SIGKILL");
    await server.dispose();
  });
  const { page, problems } = await openPage(browser(), t);
  await page.goto(server.console);
  await page.getByLabel("Username").fill(ADMIN.username);
  await page.getByLabel("Password").fill(ADMIN.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Sessions", level: 1 }).waitFor();
  await until(async () => {
    if (/overloaded/.test(await page.locator("#status").innerText())) return true;
    await page.getByRole("button", { name: "Refresh" }).click();
    return false;
  }, "a shed call shown", 30_000);
  assert.match(await page.locator("#status").innerText(), /sessiond is overloaded and shed this request: try again in 1 s\./);
  flood.kill("SIGKILL");
  // The page retries after the wait it was given, and the flood is gone.
  await until(async () => (await page.locator("#status").innerText()) === "", "the retry answered", 15_000);
  await page.locator("#sessions-body tr").first().waitFor();
  assert.deepEqual(problems, []);
});

test("sessiond unreachable (UNAVAILABLE) is said, and the table comes back by itself", async (t) => {
  const { first, restart } = await restartable(t);
  const api = await login(first, USER, "API");
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, first);
  await rowOf(page, api.id).waitFor();
  await first.stop();
  await page.getByRole("button", { name: "Refresh" }).click();
  await until(async () => /unavailable/.test(await page.locator("#status").innerText()), "unavailable said");
  assert.match(await page.locator("#feed-status").innerText(), /Reconnecting/);
  await restart();
  await until(async () => (await page.locator("#status").innerText()) === "", "the status cleared", 15_000);
  await rowOf(page, api.id).waitFor();
  await until(async () => /^Live/.test(await page.locator("#feed-status").innerText()), "the feed back", 15_000);
  assert.deepEqual(problems, []);
});
