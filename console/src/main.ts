// The console page: sign-in, the organization's live sessions and the
// endings a person can make of them, the audit trail, and the live feed.

import { api, currentToken, failure, sessionGone, setToken, Code, type Failure } from "./api.js";
import { byId, count, el, kindName, plural, time } from "./dom.js";
import { Feed } from "./endings.js";
import { EndReason, Kind, type Session } from "./gen/session/v1/session_pb.js";

const PAGE_SIZE = 50;
/// Counting what a bulk ending will end reads pages this large.
const COUNT_PAGE = 1000;

interface Me {
  username: string;
  org: string;
  sessionId: number;
}

let me: Me | null = null;
let feed: Feed | null = null;
/// Actions wait until then when the server asked callers to (Retry-After).
let heldUntil = 0;

const signinView = byId<HTMLElement>("signin-view");
const signinForm = byId<HTMLFormElement>("signin-form");
const signinMessage = byId<HTMLElement>("signin-message");
const signinButton = byId<HTMLButtonElement>("signin-button");
const usernameInput = byId<HTMLInputElement>("username");
const passwordInput = byId<HTMLInputElement>("password");
const consoleView = byId<HTMLElement>("console-view");
const nav = byId<HTMLElement>("nav");
const whoami = byId<HTMLElement>("whoami");
const signOutButton = byId<HTMLButtonElement>("sign-out");
const sessionsView = byId<HTMLElement>("sessions-view");
const auditView = byId<HTMLElement>("audit-view");
const statusLine = byId<HTMLElement>("status");
const auditStatus = byId<HTMLElement>("audit-status");
const feedStatus = byId<HTMLElement>("feed-status");
const endingsLog = byId<HTMLElement>("endings");
const filterForm = byId<HTMLFormElement>("filter-form");
const filterUser = byId<HTMLInputElement>("filter-user");
const filterKind = byId<HTMLSelectElement>("filter-kind");
const sessionsBody = byId<HTMLTableSectionElement>("sessions-body");
const sessionsCaption = byId<HTMLElement>("sessions-caption");
const auditBody = byId<HTMLTableSectionElement>("audit-body");
const dialog = byId<HTMLDialogElement>("confirm");
const confirmTitle = byId<HTMLElement>("confirm-title");
const confirmText = byId<HTMLElement>("confirm-text");
const confirmButton = byId<HTMLButtonElement>("confirm-button");
const mainArea = byId<HTMLElement>("main");

// ---- paging ----------------------------------------------------------------

/// Page tokens of the pages seen so far, for Previous and Next.
class Pager {
  private starts = [""];
  private at = 0;
  private next = "";
  private pending = false;

  constructor(
    private readonly prev: HTMLButtonElement,
    private readonly nextButton: HTMLButtonElement,
    private readonly label: HTMLElement,
    load: () => void,
  ) {
    // While a page is on its way, neither button moves: a second click
    // would count a page that was never shown.
    prev.addEventListener("click", () => {
      if (this.at > 0 && !this.pending) {
        this.pending = true;
        this.at -= 1;
        load();
      }
    });
    nextButton.addEventListener("click", () => {
      if (this.next !== "" && !this.pending) {
        this.pending = true;
        this.starts[this.at + 1] = this.next;
        this.starts.length = this.at + 2;
        this.at += 1;
        load();
      }
    });
  }

  token(): string {
    return this.starts[this.at] ?? "";
  }

  /// Settles a page load that failed: the buttons move again.
  failed(): void {
    this.pending = false;
  }

  reset(): void {
    this.pending = false;
    this.starts = [""];
    this.at = 0;
    this.next = "";
  }

  loaded(next: string): void {
    this.pending = false;
    this.next = next;
    this.prev.disabled = this.at === 0;
    this.nextButton.disabled = next === "";
    this.label.textContent = `Page ${this.at + 1}`;
  }
}

const sessionsPager = new Pager(
  byId("sessions-prev"),
  byId("sessions-next"),
  byId("sessions-page"),
  () => void loadSessions(),
);
const auditPager = new Pager(
  byId("audit-prev"),
  byId("audit-next"),
  byId("audit-page"),
  () => void loadAudit(),
);

// ---- failures --------------------------------------------------------------

/// Shows a failure where it happened; ends the console when its own session
/// is gone; holds actions for as long as the server asked; retries a read
/// (`retry`) once that time has passed.
function report(where: HTMLElement, err: unknown, retry?: () => void): Failure {
  const f = failure(err);
  // A call still in flight when the admin left: nobody to tell.
  if (me === null) return f;
  if (sessionGone(f)) {
    leave("Your session has ended: sign in again.");
    return f;
  }
  where.textContent = f.message;
  where.classList.add("error");
  if (f.retryAfterMs > 0) {
    heldUntil = Math.max(heldUntil, Date.now() + f.retryAfterMs);
    document.body.classList.add("held");
    setTimeout(() => {
      if (Date.now() >= heldUntil) document.body.classList.remove("held");
      retry?.();
    }, f.retryAfterMs);
  }
  return f;
}

function say(where: HTMLElement, text: string): void {
  where.classList.remove("error");
  where.textContent = text;
}

/// Whether an action may go now; says when it may otherwise.
function mayAct(): boolean {
  const wait = heldUntil - Date.now();
  if (wait <= 0) return true;
  statusLine.classList.add("error");
  statusLine.textContent = `Waiting as sessiond asked: try again in ${Math.ceil(wait / 1000)} s.`;
  return false;
}

// ---- sign-in and out -------------------------------------------------------

signinForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  void signIn();
});

async function signIn(): Promise<void> {
  const username = usernameInput.value.trim();
  const password = passwordInput.value;
  if (username === "" || password === "") {
    signinMessage.textContent = "Enter a username and a password.";
    return;
  }
  signinButton.disabled = true;
  signinMessage.textContent = "";
  try {
    const res = await api.login({
      username,
      password,
      kind: Kind.ADMIN,
      client: { userAgent: navigator.userAgent.slice(0, 512) },
    });
    if (!res.session) throw new Error("sign-in answered without a session");
    setToken(res.token);
    enter(res.session);
  } catch (err) {
    const f = failure(err);
    passwordInput.value = "";
    if (f.code === Code.Unauthenticated || f.code === Code.PermissionDenied) {
      // One answer whether the password was wrong or the user is no admin.
      signinMessage.textContent =
        "Sign-in failed: wrong username or password, or this user may not use the console.";
    } else {
      signinMessage.textContent = f.message;
    }
    if (f.retryAfterMs > 0) {
      setTimeout(() => (signinButton.disabled = false), f.retryAfterMs);
      return;
    }
  }
  signinButton.disabled = false;
}

function enter(session: Session): void {
  me = { username: session.user, org: session.org, sessionId: session.id };
  keptAlive = Date.now();
  passwordInput.value = "";
  signinMessage.textContent = "";
  // Out of the page while signed in: its fields label nothing then.
  signinView.remove();
  consoleView.hidden = false;
  nav.hidden = false;
  signOutButton.hidden = false;
  whoami.hidden = false;
  whoami.textContent = `${session.user} · ${session.org}`;
  endingsLog.replaceChildren();
  feed = new Feed(endingsLog, session.org, session.id, {
    ended: dropRows,
    ownSessionEnded: (why) => {
      if (!signingOut && me !== null) leave(why);
    },
    gap: () => void loadSessions(),
    trouble: (f) => {
      feedStatus.textContent = f
        ? `Reconnecting to the live feed: ${f.message}`
        : "Live: every ending in the organization, as it happens.";
    },
  });
  feed.start();
  show("sessions");
  sessionsPager.reset();
  void loadSessions();
}

/// Back to the sign-in form, saying why.
function leave(why: string): void {
  feed?.stop();
  feed = null;
  me = null;
  setToken(null);
  if (dialog.open) dialog.close("cancel");
  sessionsBody.replaceChildren();
  auditBody.replaceChildren();
  endingsLog.replaceChildren();
  say(statusLine, "");
  consoleView.hidden = true;
  nav.hidden = true;
  signOutButton.hidden = true;
  whoami.hidden = true;
  // The next admin starts from nothing of this one's.
  heldUntil = 0;
  document.body.classList.remove("held");
  recentlyEnded.clear();
  filterUser.value = "";
  filterKind.value = "0";
  applied = { user: "", kind: Kind.UNSPECIFIED };
  userActionsFollow();
  if (!signinView.isConnected) mainArea.prepend(signinView);
  signinMessage.textContent = why;
  usernameInput.focus();
}

signOutButton.addEventListener("click", () => void signOut());

/// While true, the feed's news of this console's own ending is ours.
let signingOut = false;

async function signOut(): Promise<void> {
  signingOut = true;
  try {
    await api.logoff({});
  } catch (err) {
    const f = failure(err);
    if (!sessionGone(f)) {
      signingOut = false;
      report(statusLine, err);
      return;
    }
  }
  // The feed may have told of this Logoff before its answer came back.
  signingOut = false;
  leave("You have signed out.");
}

// ---- views -----------------------------------------------------------------

byId("show-sessions").addEventListener("click", () => {
  show("sessions");
  void loadSessions();
});
byId("show-audit").addEventListener("click", () => {
  show("audit");
  auditPager.reset();
  void loadAudit();
});

function show(view: "sessions" | "audit"): void {
  sessionsView.hidden = view !== "sessions";
  auditView.hidden = view !== "audit";
  for (const [id, v] of [["show-sessions", "sessions"], ["show-audit", "audit"]] as const) {
    if (v === view) byId(id).setAttribute("aria-current", "page");
    else byId(id).removeAttribute("aria-current");
  }
  byId(view === "sessions" ? "sessions-title" : "audit-title").focus();
}

// ---- sessions --------------------------------------------------------------

/// The filters in force: what the table shows and the user actions act on.
let applied = { user: "", kind: Kind.UNSPECIFIED as Kind };
const rows = new Map<number, HTMLTableRowElement>();
let loading = 0;

/// The table follows the filters as they change (typing settles for
/// FILTER_SETTLE_MS first); Enter or `Filter` applies them at once.
const FILTER_SETTLE_MS = 300;
let settling: number | undefined;

function applyFilters(): void {
  clearTimeout(settling);
  settling = undefined;
  const next = { user: filterUser.value.trim(), kind: Number(filterKind.value) as Kind };
  if (next.user === applied.user && next.kind === applied.kind) return;
  applied = next;
  sessionsPager.reset();
  void loadSessions();
}

/// The user actions act on the name in `User`, and wait for one.
function userActionsFollow(): void {
  const none = filterUser.value.trim() === "";
  for (const id of ["end-mail", "end-user"]) byId<HTMLButtonElement>(id).disabled = none;
}

filterForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  applyFilters();
});
filterUser.addEventListener("input", () => {
  userActionsFollow();
  clearTimeout(settling);
  settling = window.setTimeout(applyFilters, FILTER_SETTLE_MS);
});
filterKind.addEventListener("change", applyFilters);
userActionsFollow();
byId("refresh").addEventListener("click", () => void loadSessions());

/// Ids ended lately (by the feed or by this page), with when: a list answer
/// sent before an ending must not bring its row back.
const recentlyEnded = new Map<number, number>();
const REMEMBER_ENDED_MS = 60_000;

/// Writes the page's rows, keeping the rows (and a focused button) of
/// sessions already shown: only what changed moves.
function render(sessions: Session[]): void {
  const keep = new Map(rows);
  rows.clear();
  const wanted = sessions.map((x) => {
    const old = keep.get(x.id);
    if (old) {
      const seen = old.cells[3];
      if (seen) seen.replaceChildren(time(x.lastSeenAt));
      rows.set(x.id, old);
      return old;
    }
    return sessionRow(x);
  });
  for (const [id, tr] of keep) if (!rows.has(id)) tr.remove();
  let at = sessionsBody.firstElementChild;
  for (const tr of wanted) {
    if (tr === at) {
      at = at.nextElementSibling;
    } else {
      sessionsBody.insertBefore(tr, at);
    }
  }
}

/// New sessions have no feed: the page shown is read again this often while
/// it is in view.
const RELIST_MS = 2000;
setInterval(() => {
  if (me === null || sessionsView.hidden || document.visibilityState !== "visible") return;
  if (inFlight > 0 || dialog.open) return;
  void loadSessions();
}, RELIST_MS);
let inFlight = 0;

async function loadSessions(): Promise<void> {
  if (me === null) return;
  const mine = ++loading;
  const now = Date.now();
  for (const [id, at] of recentlyEnded) {
    if (now - at > REMEMBER_ENDED_MS) recentlyEnded.delete(id);
  }
  inFlight += 1;
  try {
    const res = await api.listSessions({
      user: applied.user,
      kind: applied.kind,
      pageSize: PAGE_SIZE,
      pageToken: sessionsPager.token(),
    });
    if (mine !== loading || me === null) return;
    // An ending that arrived while this answer was on its way wins.
    render(res.sessions.filter((x) => !recentlyEnded.has(x.id)));
    sessionsPager.loaded(res.nextPageToken);
    caption();
    if (statusLine.classList.contains("error")) say(statusLine, "");
  } catch (err) {
    if (mine === loading) {
      sessionsPager.failed();
      report(statusLine, err, () => void loadSessions());
    }
  } finally {
    inFlight -= 1;
  }
}

function caption(): void {
  const who = applied.user === "" ? "" : ` of ${applied.user}`;
  const kind = applied.kind === Kind.UNSPECIFIED ? "" : ` ${kindName(applied.kind)}`;
  sessionsCaption.textContent = `Live${kind} sessions${who}: ${plural(rows.size, "shown", "shown")}`;
}

function sessionRow(s: Session): HTMLTableRowElement {
  const own = me !== null && s.id === me.sessionId;
  // The name is the content ("End session" and, for screen readers, whose),
  // not an aria-label, so that labels stay unique to the page's fields.
  const end = el(
    "button",
    { type: "button", class: "end" },
    "End session",
    el(
      "span",
      { class: "visually-hidden" },
      ` ${s.id} of ${s.user} (${kindName(s.kind)})${own ? ", this console" : ""}`,
    ),
  );
  end.addEventListener("click", () => void endOne(s, end));
  const tr = el(
    "tr",
    { "data-id": String(s.id) },
    el("td", {}, s.user, own ? el("span", { class: "muted" }, " (this console)") : null),
    el("td", {}, kindName(s.kind)),
    el("td", {}, time(s.createdAt)),
    el("td", {}, time(s.lastSeenAt)),
    el("td", {}, s.peerAddress || s.client?.address || ""),
    el("td", { class: "agent" }, s.client?.userAgent ?? ""),
    el("td", {}, end),
  );
  rows.set(s.id, tr);
  return tr;
}

/// Rows of ended sessions leave at once; an emptied page fills again.
let refill: number | undefined;
function dropRows(ids: Set<number>): void {
  let dropped = 0;
  const now = Date.now();
  for (const id of ids) {
    recentlyEnded.set(id, now);
    const tr = rows.get(id);
    if (tr) {
      // A keyboard user keeps their place: the next row's button, or the
      // table's caption when none is left.
      if (tr.contains(document.activeElement)) {
        const next = tr.nextElementSibling ?? tr.previousElementSibling;
        const button = next?.querySelector("button");
        if (button instanceof HTMLElement) button.focus();
        else sessionsCaption.focus();
      }
      tr.remove();
      rows.delete(id);
      dropped += 1;
    }
  }
  if (dropped === 0) return;
  caption();
  if (rows.size === 0 && refill === undefined) {
    // At most once a second, however long the burst.
    refill = window.setTimeout(() => {
      refill = undefined;
      if (rows.size === 0) {
        sessionsPager.reset();
        void loadSessions();
      }
    }, 1000);
  }
}

async function endOne(s: Session, button: HTMLButtonElement): Promise<void> {
  // aria-disabled, not disabled: a disabled button would drop the focus.
  if (button.getAttribute("aria-disabled") === "true" || !mayAct()) return;
  button.setAttribute("aria-disabled", "true");
  const own = me !== null && s.id === me.sessionId;
  try {
    signingOut = own;
    await api.logoffOther({ sessionId: s.id, kind: s.kind });
    if (own) {
      signingOut = false;
      leave("You ended this console's own session.");
      return;
    }
    dropRows(new Set([s.id]));
    say(statusLine, `Ended ${kindName(s.kind)} session ${s.id} of ${s.user}.`);
  } catch (err) {
    signingOut = false;
    const f = report(statusLine, err);
    if (f.code === Code.NotFound) {
      dropRows(new Set([s.id]));
      say(statusLine, `Session ${s.id} of ${s.user} had already ended.`);
    } else {
      button.removeAttribute("aria-disabled");
    }
  }
}

/// How many live sessions match, read page by page.
async function countSessions(user: string, kinds: Kind[], signal: AbortSignal): Promise<number> {
  let n = 0;
  for (const kind of kinds) {
    let pageToken = "";
    do {
      const res = await api.listSessions({ user, kind, pageSize: COUNT_PAGE, pageToken }, { signal });
      n += res.sessions.length;
      pageToken = res.nextPageToken;
    } while (pageToken !== "");
  }
  return n;
}

/// Asks in the dialog, once the count is known; resolves true when the
/// person confirms, null when they cancel.
function confirmEnding(
  what: (n: number) => string,
  count: (signal: AbortSignal) => Promise<number>,
): Promise<true | null> {
  // One title for every ending: the text says which, and a title naming a
  // user would label the dialog with that name.
  confirmTitle.textContent = "Confirm ending";
  const stop = new AbortController();
  const counting = count(stop.signal);
  confirmText.textContent = "Counting the sessions this will end…";
  confirmButton.disabled = true;
  // Named only while open: a closed dialog's title labels nothing.
  dialog.setAttribute("aria-labelledby", "confirm-title");
  dialog.setAttribute("aria-describedby", "confirm-text");
  dialog.returnValue = "";
  dialog.showModal();
  let ready = false;
  counting.then(
    (n) => {
      if (!dialog.open) return;
      if (n <= 0) {
        confirmText.textContent = `${what(0)} There is nothing to end.`;
        return;
      }
      confirmText.textContent = what(n);
      confirmButton.disabled = false;
      ready = true;
      confirmButton.focus();
    },
    (err) => {
      if (!dialog.open) return;
      const f = failure(err);
      if (sessionGone(f)) {
        leave("Your session has ended: sign in again.");
        return;
      }
      confirmText.textContent = `Could not count the sessions: ${f.message}`;
    },
  );
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        stop.abort();
        resolve(ready && dialog.returnValue === "confirm" ? true : null);
        dialog.removeAttribute("aria-labelledby");
        dialog.removeAttribute("aria-describedby");
      },
      { once: true },
    );
  });
}

const bulkButtons = ["end-mail", "end-user", "end-api"].map((id) => byId<HTMLButtonElement>(id));

/// One bulk ending at a time: its buttons say so (aria-disabled, not
/// disabled, so that the dialog can give the focus back to its opener).
let bulkRunning = false;
function bulk(action: () => Promise<void>): () => void {
  return () => {
    if (bulkRunning) return;
    bulkRunning = true;
    for (const b of bulkButtons) b.setAttribute("aria-disabled", "true");
    void action().finally(() => {
      bulkRunning = false;
      for (const b of bulkButtons) b.removeAttribute("aria-disabled");
    });
  };
}

byId("end-mail").addEventListener("click", bulk(endMail));
byId("end-user").addEventListener("click", bulk(endUser));
byId("end-api").addEventListener("click", bulk(endApi));

async function endMail(): Promise<void> {
  const user = filterUser.value.trim();
  if (me === null || user === "" || !mayAct()) return;
  const ok = await confirmEnding(
    (n) => `This ends ${plural(n, "IMAP or POP session", "IMAP and POP sessions")} of ${user}.`,
    (signal) => countSessions(user, [Kind.IMAP, Kind.POP], signal),
  );
  if (ok === null || me === null) return;
  const token = currentToken() ?? "";
  try {
    const res = await api.logoutUser({
      credentials: { user: me.username, secret: { case: "token", value: token } },
      user,
    });
    say(statusLine, `Ended ${plural(res.ended, "mail session", "mail sessions")} of ${user}.`);
    void loadSessions();
  } catch (err) {
    report(statusLine, err);
  }
}

async function endUser(): Promise<void> {
  const user = filterUser.value.trim();
  if (me === null || user === "" || !mayAct()) return;
  const self = user === me.username;
  const ok = await confirmEnding(
    (n) =>
      `This ends ${plural(n, "session", "sessions")} of ${user}, of every kind` +
      (self ? " (this console's own session is kept)." : "."),
    (signal) => countSessions(user, [Kind.UNSPECIFIED], signal).then((n) => (self ? n - 1 : n)),
  );
  if (ok === null) return;
  try {
    const res = await api.endUserSessions({ user, kinds: [], keepCurrent: true });
    say(statusLine, `Ended ${plural(res.ended, "session", "sessions")} of ${user}.`);
    void loadSessions();
  } catch (err) {
    report(statusLine, err);
  }
}

async function endApi(): Promise<void> {
  if (me === null || !mayAct()) return;
  const org = me.org;
  const ok = await confirmEnding(
    (n) => `This ends ${plural(n, "API session", "API sessions")} of ${org}, every user's.`,
    (signal) => countSessions("", [Kind.API], signal),
  );
  if (ok === null || me === null) return;
  say(statusLine, "Ending every API session…");
  try {
    // LogoutAll by this admin's session (the token in metadata, no password).
    const res = await api.logoutAll({});
    say(statusLine, `Ended ${plural(res.ended, "API session", "API sessions")} of ${org}.`);
    void loadSessions();
  } catch (err) {
    report(statusLine, err);
  }
}

// ---- audit -----------------------------------------------------------------

const ACTIONS: Record<number, string> = {
  [EndReason.LOGOFF]: "Log off",
  [EndReason.LOGOFF_OTHER]: "Log off other session",
  [EndReason.LOGOUT_USER]: "Log out mailbox",
  [EndReason.LOGOUT_ALL]: "Log out all API sessions",
  [EndReason.EXPIRED]: "Expiry",
  [EndReason.END_USER_SESSIONS]: "End user sessions",
  [EndReason.PASSWORD_CHANGED]: "Password change",
  [EndReason.SESSION_LIMIT]: "Session limit",
  [EndReason.GLOBAL_TOKEN_REVOCATION]: "Global token revocation",
};

let auditLoading = 0;
async function loadAudit(): Promise<void> {
  if (me === null) return;
  const mine = ++auditLoading;
  try {
    const res = await api.listAuditRecords({ pageSize: PAGE_SIZE, pageToken: auditPager.token() });
    if (mine !== auditLoading || me === null) return;
    auditBody.replaceChildren(
      ...res.records.map((r) =>
        el(
          "tr",
          {},
          el("td", {}, time(r.at)),
          el("td", {}, r.actor),
          el("td", {}, ACTIONS[r.reason] ?? "Ending"),
          el("td", {}, r.target),
          el("td", { class: "number" }, count(r.ended)),
        ),
      ),
    );
    auditPager.loaded(res.nextPageToken);
    say(auditStatus, res.records.length === 0 ? "No audit records yet." : "");
  } catch (err) {
    if (mine === auditLoading) {
      auditPager.failed();
      report(auditStatus, err, () => void loadAudit());
    }
  }
}

// ---- idle timer ------------------------------------------------------------

/// A person at work keeps the console's session from idling out: their
/// activity refreshes its idle timer (ValidateSession, at most once a
/// minute). An unattended console does not, and expires as any session does.
const KEEPALIVE_MS = 60_000;
let keptAlive = Date.now();

function activity(): void {
  const token = currentToken();
  if (me === null || token === null || Date.now() - keptAlive < KEEPALIVE_MS) return;
  keptAlive = Date.now();
  api.validateSession({ token }).catch((err: unknown) => {
    if (sessionGone(failure(err))) leave("Your session has ended: sign in again.");
  });
}

document.addEventListener("pointerdown", activity, { passive: true });
document.addEventListener("keydown", activity, { passive: true });

// ---- start -----------------------------------------------------------------

async function resume(): Promise<void> {
  const token = currentToken();
  if (token === null) {
    usernameInput.focus();
    return;
  }
  try {
    const res = await api.validateSession({ token });
    if (res.session && res.session.kind === Kind.ADMIN) {
      enter(res.session);
      return;
    }
  } catch {
    // An ended or unknown token: sign in again.
  }
  setToken(null);
  usernameInput.focus();
}

void resume();
