// The console for people who use a keyboard or a screen reader: an axe-core
// scan of every view finds nothing serious or critical, and every action
// can be done with Tab, typing and Enter alone.

import assert from "node:assert/strict";
import { test } from "node:test";
import AxeBuilder from "@axe-core/playwright";
import {
  ADMIN, USER, grpc, isLive, sharedBrowser, login, openPage, rowOf, signIn,
  startSessiond, tabTo, until,
} from "./harness.mjs";

const browser = sharedBrowser();

/// Fails on any serious or critical axe violation, naming each.
async function scan(page, view) {
  const result = await new AxeBuilder({ page }).analyze();
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
    [],
    `axe on ${view}`,
  );
  assert.ok(result.passes.length > 10, `axe ran its rules on ${view}`);
}

test("axe finds nothing serious or critical on any view", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  await login(server, USER, "IMAP");
  await login(server, USER, "API");
  const other = await login(server, ADMIN, "ADMIN");
  const { page, problems } = await openPage(browser(), t);

  await page.goto(server.console);
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  await scan(page, "the sign-in form");
  await page.getByLabel("Username").fill(ADMIN.username);
  await page.getByLabel("Password").fill("wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await until(async () => (await page.getByRole("alert").innerText()).includes("Sign-in failed"), "the refusal");
  await scan(page, "the sign-in form with its error");

  await signIn(page, server);
  await until(async () => (await page.locator("#sessions-body tr").count()) === 4, "four sessions");
  await grpc(server, "Logoff", {}, other.token);
  await until(async () => (await page.getByRole("log", { name: "Endings" }).innerText()).includes("signed off"), "an ending");
  await scan(page, "the sessions view with the live feed");

  await page.getByLabel("User").fill(USER.username);
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByRole("button", { name: "End mail sessions" }).click();
  await until(async () => (await page.getByRole("dialog").innerText()).includes("1 IMAP or POP session"), "the count");
  await scan(page, "the confirmation dialog");
  await page.getByRole("dialog").getByRole("button", { name: "Cancel" }).click();

  await page.getByRole("button", { name: "Audit" }).click();
  await until(async () => (await page.locator("#audit-body tr").count()) >= 1, "an audit record");
  await scan(page, "the audit view");
  assert.deepEqual(problems, []);
});

test("every action can be done with the keyboard alone", async (t) => {
  const server = await startSessiond();
  t.after(() => server.dispose());
  const api = [await login(server, USER, "API"), await login(server, USER, "API")];
  const imap = [await login(server, USER, "IMAP"), await login(server, USER, "POP")];
  const pop = await login(server, USER, "POP");
  const { page, problems } = await openPage(browser(), t);
  const kb = page.keyboard;

  // Sign in: the username field has the focus when the page opens.
  await page.goto(server.console);
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  await until(() => page.getByLabel("Username").evaluate((n) => n === document.activeElement), "the first field focused");
  await kb.type(ADMIN.username);
  await kb.press("Tab");
  await kb.type(ADMIN.password);
  await kb.press("Enter");
  await page.getByRole("heading", { name: "Sessions", level: 1 }).waitFor();
  await rowOf(page, pop.id).waitFor();

  // One session, by its row's button.
  await tabTo(page, rowOf(page, pop.id).getByRole("button", { name: /^End session/ }));
  await kb.press("Enter");
  await rowOf(page, pop.id).waitFor({ state: "detached" });
  assert.equal(await isLive(server, pop.token), false);
  // The focus stays in the table (the next row's button), not lost to the page.
  assert.match(await page.evaluate(() => document.activeElement?.textContent ?? ""), /^End session/);

  // Filter by user, then end the user's mail sessions: the dialog takes the
  // focus to Confirm once it knows the count.
  await tabTo(page, page.getByLabel("User"));
  await kb.type(USER.username);
  await kb.press("Enter");
  await page.getByRole("button", { name: "End mail sessions" }).waitFor();
  await tabTo(page, page.getByRole("button", { name: "End mail sessions" }));
  await kb.press("Enter");
  const confirm = page.getByRole("dialog").getByRole("button", { name: "Confirm" });
  await until(() => confirm.evaluate((n) => n === document.activeElement), "Confirm focused");
  await kb.press("Enter");
  await until(async () => (await page.locator("#status").innerText()).includes("Ended 2 mail sessions"), "the result");
  for (const s of imap) assert.equal(await isLive(server, s.token), false);

  // Every API session of the org.
  await tabTo(page, page.getByRole("button", { name: "End all API sessions" }));
  await kb.press("Enter");
  await until(() => confirm.evaluate((n) => n === document.activeElement), "Confirm focused");
  await kb.press("Enter");
  await until(async () => (await page.locator("#status").innerText()).includes("Ended 2 API sessions"), "the result");
  for (const s of api) assert.equal(await isLive(server, s.token), false);

  // Escape closes a dialog and ends nothing.
  const again = await login(server, USER, "API");
  await tabTo(page, page.getByRole("button", { name: "End all sessions of user" }));
  await kb.press("Enter");
  await page.getByRole("dialog").waitFor();
  await kb.press("Escape");
  await page.getByRole("dialog").waitFor({ state: "hidden" });
  assert.equal(await isLive(server, again.token), true);
  await until(
    () => page.getByRole("button", { name: "End all sessions of user" }).evaluate((n) => n === document.activeElement),
    "the focus back on the button that opened the dialog",
  );

  // The audit view, and back.
  await tabTo(page, page.getByRole("button", { name: "Audit" }));
  await kb.press("Enter");
  await until(async () => (await page.locator("#audit-body tr").count()) >= 3, "the audit records");
  await tabTo(page, page.getByRole("button", { name: "Sessions" }));
  await kb.press("Enter");
  await page.getByRole("heading", { name: "Sessions", level: 1 }).waitFor();

  // Sign out.
  await tabTo(page, page.getByRole("button", { name: "Sign out" }));
  await kb.press("Enter");
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  assert.deepEqual(problems, []);
});
