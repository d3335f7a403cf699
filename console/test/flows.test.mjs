// What an admin does in the console, in Chromium against a real
// `sessiond serve --demo`: sign in, see the sessions other clients opened,
// end them one by one, by mailbox, by user and org-wide, watch endings made
// elsewhere arrive, and sign out.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ADMIN, OTHER_ORG_ADMIN, USER, grpc, isLive, sharedBrowser, login, openPage, rowOf,
  sessionRows, sessiondCli, signIn, restartable, startSessiond, until,
} from "./harness.mjs";

const browser = sharedBrowser();

test("an admin sees the sessions made over gRPC and ends one, a mailbox's, a user's and every API session", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const imap = [await login(server, USER, "IMAP"), await login(server, USER, "IMAP")];
  const pop = await login(server, USER, "POP");
  const api = [await login(server, USER, "API"), await login(server, USER, "API"), await login(server, USER, "API")];
  const otherAdmin = await login(server, ADMIN, "ADMIN");
  const otherOrg = await login(server, OTHER_ORG_ADMIN, "API");

  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  for (const s of [...imap, pop, ...api, otherAdmin]) {
    await rowOf(page, s.id).waitFor();
  }
  assert.equal(await rowOf(page, otherOrg.id).count(), 0, "another org's session is not listed");
  const row = rowOf(page, api[0].id);
  const cells = await row.locator("td").allInnerTexts();
  assert.equal(cells[0], USER.username);
  assert.equal(cells[1], "API");
  assert.match(cells[2], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/, "opened");
  assert.match(cells[3], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/, "last seen");
  assert.equal(cells[4], "127.0.0.1", "the address the server saw");
  assert.equal(cells[5], "grpcurl test client");

  // One session: no question asked.
  await row.getByRole("button", { name: /^End session/ }).click();
  await row.waitFor({ state: "detached" });
  assert.equal(await isLive(server, api[0].token), false);
  assert.equal(await isLive(server, api[1].token), true);
  await until(async () => (await page.getByRole("log", { name: "Endings" }).innerText()).includes(`#${api[0].id}`), "the ending in Endings");

  // A mailbox's IMAP and POP sessions: asked first, with the count.
  await page.getByLabel("User", { exact: true }).fill(USER.username);
  await page.getByRole("button", { name: "Filter" }).click();
  await until(async () => (await sessionRows(page).count()) === 5, "joe's five sessions listed");
  await page.getByRole("button", { name: "End mail sessions" }).click();
  const dialog = page.getByRole("dialog");
  await until(async () => (await dialog.innerText()).includes("3 IMAP and POP sessions"), "the dialog's count");
  await dialog.getByRole("button", { name: "Confirm" }).click();
  await until(async () => (await page.locator("#status").innerText()).includes("Ended 3 mail sessions"), "the result");
  for (const s of [...imap, pop]) assert.equal(await isLive(server, s.token), false);
  assert.equal(await isLive(server, api[1].token), true, "API sessions are not mail sessions");

  // Every API session of the org (LogoutAll by the admin's session): asked
  // first, with the count.
  await page.getByRole("button", { name: "End all API sessions" }).click();
  await until(async () => (await dialog.innerText()).includes("2 API sessions"), "the dialog's count");
  await dialog.getByRole("button", { name: "Confirm" }).click();
  await until(async () => (await page.locator("#status").innerText()).includes("Ended 2 API sessions"), "the result");
  for (const s of api) assert.equal(await isLive(server, s.token), false);
  assert.equal(await isLive(server, otherOrg.token), true, "another org's API session stays");

  // Every session of one user.
  const more = [await login(server, USER, "POP"), await login(server, USER, "API")];
  await page.getByRole("button", { name: "Refresh" }).click();
  await until(async () => (await sessionRows(page).count()) === 2, "joe's new sessions listed");
  await page.getByRole("button", { name: "End all sessions of user" }).click();
  await until(async () => (await dialog.innerText()).includes("2 sessions"), "the dialog's count");
  await dialog.getByRole("button", { name: "Confirm" }).click();
  await until(async () => (await page.locator("#status").innerText()).includes("Ended 2 sessions"), "the result");
  for (const s of more) assert.equal(await isLive(server, s.token), false);
  assert.equal(await isLive(server, otherAdmin.token), true);
  assert.deepEqual(problems, []);
});

test("a cancelled ending ends nothing", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const api = [await login(server, USER, "API"), await login(server, USER, "API")];
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  const dialog = page.getByRole("dialog");
  await page.getByRole("button", { name: "End all API sessions" }).click();
  await until(async () => (await dialog.innerText()).includes("2 API sessions"), "the count");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await dialog.waitFor({ state: "hidden" });
  await page.getByLabel("User").fill(USER.username);
  await page.getByRole("button", { name: "End all sessions of user" }).click();
  await until(async () => (await dialog.innerText()).includes("2 sessions"), "the count");
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  for (const s of api) assert.equal(await isLive(server, s.token), true);
  assert.equal(await page.locator("#status").innerText(), "", "nothing said, nothing done");
  assert.deepEqual(problems, []);
});

test("endings made by other clients appear in Endings and leave the table", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const otherAdmin = await login(server, ADMIN, "ADMIN");
  const imap = await login(server, USER, "IMAP");
  const api = await login(server, USER, "API");
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  await rowOf(page, imap.id).waitFor();
  const endings = page.getByRole("log", { name: "Endings" });

  // The REST shim: OpenSRS logout_user, as its documentation shows it.
  const res = await fetch(`${server.rest}/api/logout_user`, {
    method: "POST",
    body: JSON.stringify({ credentials: { user: ADMIN.username, password: ADMIN.password }, user: USER.username }),
  });
  assert.deepEqual(await res.json(), { success: true });
  await rowOf(page, imap.id).waitFor({ state: "detached" });
  await until(async () => (await endings.innerText()).includes(`IMAP session #${imap.id} · mail logout`), "the shim's ending");

  // Another admin, over gRPC.
  await grpc(server, "LogoffOther", { sessionId: api.id, kind: "KIND_API" }, otherAdmin.token);
  await rowOf(page, api.id).waitFor({ state: "detached" });
  await until(async () => (await endings.innerText()).includes(`API session #${api.id} · ended by an admin`), "the admin's ending");

  // The user itself.
  await grpc(server, "Logoff", {}, otherAdmin.token);
  await until(async () => (await endings.innerText()).includes(`Admin session #${otherAdmin.id} · signed off`), "a logoff");
  assert.deepEqual(problems, []);
});

test("after a restart the feed resumes from its cursor: endings made while it was away arrive", async (t) => {
  const { first, restart } = await restartable(t);
  const imap = await login(first, USER, "IMAP");
  const api = await login(first, USER, "API");
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, first);
  await rowOf(page, api.id).waitFor();
  await first.stop();
  await until(async () => (await page.locator("#feed-status").innerText()).includes("Reconnecting"), "the feed notices");
  // Ended while no sessiond runs: the CLI, on the store itself.
  await sessiondCli(["user", "disable", USER.username, "--store", first.store]);
  await restart();
  const endings = page.getByRole("log", { name: "Endings" });
  await until(async () => {
    const text = await endings.innerText();
    return text.includes(`#${imap.id}`) && text.includes(`#${api.id}`);
  }, "both endings, made while the feed was away", 30_000);
  await rowOf(page, api.id).waitFor({ state: "detached" });
  assert.equal(await page.getByRole("heading", { name: "Sessions", level: 1 }).count(), 1, "still signed in");
  assert.deepEqual(problems, []);
});

test("when its own session is ended elsewhere the console returns to sign-in and says so", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const otherAdmin = await login(server, ADMIN, "ADMIN");
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  const own = page.locator("#sessions-table tbody tr", { hasText: "(this console)" });
  const id = Number(await own.getAttribute("data-id"));
  await grpc(server, "LogoffOther", { sessionId: id }, otherAdmin.token);
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  assert.match(await page.getByRole("alert").innerText(), /ended elsewhere/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "the token is gone");
  assert.deepEqual(problems, []);
});

test("Sign out ends the console's session and forgets its token", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  const token = await page.evaluate(() => sessionStorage.getItem("sessiond.console.token"));
  assert.ok(token && token.length > 20);
  assert.equal(await page.evaluate(() => localStorage.length), 0, "nothing in localStorage");
  assert.ok(!page.url().includes(token), "never in the URL");
  assert.equal(await isLive(server, token), true);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  assert.match(await page.getByRole("alert").innerText(), /signed out/);
  assert.equal(await isLive(server, token), false);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  // A reload stays signed out.
  await page.reload();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  assert.deepEqual(problems, []);
});

test("a reload keeps the admin signed in (the token is in this tab's sessionStorage only)", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const { page, context, problems } = await openPage(browser(), t);
  await signIn(page, server);
  await page.reload();
  await page.getByRole("heading", { name: "Sessions", level: 1 }).waitFor();
  const other = await context.newPage();
  await other.goto(server.console);
  await other.getByRole("button", { name: "Sign in" }).waitFor();
  assert.deepEqual(problems, []);
});

test("the Audit view lists ListAuditRecords, paged", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const admin = await login(server, ADMIN, "ADMIN");
  // 55 endings: more than one page of 50.
  for (let batch = 0; batch < 11; batch++) {
    const made = await Promise.all(Array.from({ length: 5 }, () => login(server, USER, "API")));
    await Promise.all(made.map((s) => grpc(server, "LogoffOther", { sessionId: s.id, kind: "KIND_API" }, admin.token)));
  }
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  await page.getByRole("button", { name: "Audit" }).click();
  await page.getByRole("heading", { name: "Audit", level: 1 }).waitFor();
  const rows = page.locator("#audit-body tr");
  await until(async () => (await rows.count()) === 50, "a first page of 50");
  assert.match(await rows.first().innerText(), /Log off other session/);
  assert.match(await rows.first().innerText(), new RegExp(ADMIN.username.replace(".", "\\.")));
  await page.getByRole("button", { name: "Next page" }).click();
  await until(async () => (await rows.count()) === 5, "the rest on page 2");
  assert.equal(await page.locator("#audit-page").innerText(), "Page 2");
  await page.getByRole("button", { name: "Previous page" }).click();
  await until(async () => (await rows.count()) === 50, "page 1 again");
  assert.deepEqual(problems, []);
});

test("sessions are paged, and filtered by user and by kind", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  await Promise.all(Array.from({ length: 52 }, () => login(server, USER, "API")));
  await login(server, USER, "IMAP");
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  await until(async () => (await sessionRows(page).count()) === 50, "a first page of 50");
  await page.getByRole("button", { name: "Next page" }).click();
  await until(async () => (await sessionRows(page).count()) === 4, "54 sessions: 4 on page 2");
  await page.getByLabel("Kind").selectOption({ label: "IMAP" });
  await page.getByRole("button", { name: "Filter" }).click();
  await until(async () => (await sessionRows(page).count()) === 1, "one IMAP session");
  await page.getByLabel("Kind").selectOption({ label: "All kinds" });
  await page.getByLabel("User", { exact: true }).fill(ADMIN.username);
  await page.getByRole("button", { name: "Filter" }).click();
  await until(async () => (await sessionRows(page).count()) === 1, "the admin's own session");
  assert.deepEqual(problems, []);
});

test("an unattended console's session expires like any other, and the page says so", async (t) => {
  const server = await startSessiond({ extra: ["--idle-timeout-secs", "2", "--sweep-interval-secs", "1"] });
  t.after(() => server.dispose());
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  await page.getByRole("button", { name: "Sign in" }).waitFor({ timeout: 20_000 });
  assert.match(await page.getByRole("alert").innerText(), /expired/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "the token is gone");
  assert.deepEqual(problems, []);
});

test("sessions opened after sign-in appear by themselves, and a late answer does not bring an ended row back", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  // Before anything has ended, the log is there to be seen.
  await page.getByRole("log", { name: "Endings" }).waitFor({ state: "visible" });
  assert.equal(await page.getByRole("textbox", { name: "User" }).count(), 1);
  const imap = await login(server, USER, "IMAP");
  await rowOf(page, imap.id).waitFor({ timeout: 5_000 });

  // A list answer held back on the network while the session ends.
  let held = 0;
  await page.route("**/session.v1.SessionService/ListSessions", async (route) => {
    held += 1;
    await new Promise((r) => setTimeout(r, 1500));
    await route.continue();
  });
  await page.getByRole("button", { name: "Refresh" }).click();
  await until(() => held > 0, "a list on its way");
  const admin = await login(server, ADMIN, "ADMIN");
  await grpc(server, "LogoffOther", { sessionId: imap.id, kind: "KIND_IMAP" }, admin.token);
  await rowOf(page, imap.id).waitFor({ state: "detached" });
  await page.waitForTimeout(2500);
  assert.equal(await rowOf(page, imap.id).count(), 0, "the ended row stays gone");
  await page.unroute("**/session.v1.SessionService/ListSessions");
  assert.deepEqual(problems, []);
});

test("a small bulk ending is shown session by session, a large one as one line naming its users", async (t) => {
  const server = await startSessiond({ extra: ["--max-endings-per-user", "0"] });
  t.after(() => server.dispose());
  const few = await Promise.all(Array.from({ length: 5 }, () => login(server, USER, "API")));
  const { page, problems } = await openPage(browser(), t);
  await signIn(page, server);
  const endings = page.getByRole("log", { name: "Endings" });
  await grpc(server, "LogoutAll", { username: USER.username, password: USER.password });
  await until(async () => {
    const text = await endings.innerText();
    return few.every((s) => text.includes(`${USER.username} · API session #${s.id} · all API sessions ended`));
  }, "each of the five");
  await Promise.all(Array.from({ length: 40 }, () => login(server, USER, "API")));
  await grpc(server, "LogoutAll", { username: USER.username, password: USER.password });
  await until(async () => (await endings.innerText()).includes(`40 API sessions of ${USER.username} · all API sessions ended`), "one line for forty");
  assert.deepEqual(problems, []);
});
