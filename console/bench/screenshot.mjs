// Takes docs/console.png: the console with example.com's sessions and the
// Endings feed after endings made by other clients.
//   SESSIOND_BIN=target/debug/sessiond node console/bench/screenshot.mjs
import { ADMIN, USER, grpc, launchBrowser, login, startSessiond } from "../test/harness.mjs";

const server = await startSessiond();
const browser = await launchBrowser();
try {
  const admin2 = await login(server, ADMIN, "ADMIN", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Firefox/133.0");
  await login(server, USER, "IMAP", "dovecot-proxy/2.3.21");
  await login(server, USER, "POP", "dovecot-proxy/2.3.21");
  const api = [];
  for (const agent of ["informatica-agent/62.1", "curl/8.5.0", "python-requests/2.32.3"]) {
    api.push(await login(server, USER, "API", agent));
  }
  const imap2 = await login(server, USER, "IMAP", "roundcube/1.6.9");
  const page = await browser.newPage({ viewport: { width: 1360, height: 640 } });
  await page.goto(server.console);
  await page.getByLabel("Username").fill(ADMIN.username);
  await page.getByLabel("Password").fill(ADMIN.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#sessions-body tr").nth(7).waitFor();
  await grpc(server, "LogoffOther", { sessionId: api[2].id, kind: "KIND_API" }, admin2.token);
  await fetch(`${server.rest}/api/logout_user`, {
    method: "POST",
    body: JSON.stringify({ credentials: { user: ADMIN.username, password: ADMIN.password }, user: USER.username }),
  });
  await page.waitForFunction(() => document.getElementById("endings").childElementCount >= 4);
  await page.locator(`#sessions-body tr[data-id="${imap2.id}"]`).waitFor({ state: "detached" });
  await page.waitForTimeout(300);
  await page.screenshot({ path: new URL("../../docs/console.png", import.meta.url).pathname });
} finally {
  await browser.close();
  await server.dispose();
}
