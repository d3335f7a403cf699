// The live feed: WatchRevocations for the admin's org, shown in the
// `Endings` log and handed to the sessions table. Endings arrive one event
// each (a LogoutAll of 30,000 sessions is 30,000 events), so they are
// gathered and written to the page at most every FLUSH_MS: a burst becomes
// one line that counts up, and the table drops its rows in one pass. A
// lone ending is written at once.

import { api, Code, failure, type Failure } from "./api.js";
import { clock, count, el, kindName, reasonName } from "./dom.js";
import { EndReason, type Revocation } from "./gen/session/v1/session_pb.js";

const FLUSH_MS = 100;
/// Lines kept in the log; older ones leave as new ones come.
const MAX_LINES = 200;
/// More events than this of one reason and kind in one flush make one line.
const GROUP_OVER = 20;
/// A burst line keeps counting while its events keep coming this close
/// (a burst fills consecutive flushes, FLUSH_MS apart).
const BURST_GAP_MS = 500;
/// Users a burst line names before it counts the rest.
const NAMED_USERS = 3;
const HEARTBEAT_MS = 10_000;
/// Longest stretch of reading the feed before the page gets its turn.
const SLICE_MS = 8;

/// Lets input, rendering and timers run before going on (a macrotask, not a
/// microtask: `await` alone would not let them in).
function yieldToPage(): Promise<void> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

export interface FeedHooks {
  /// The session ids that just ended, once per flush.
  ended(ids: Set<number>): void;
  /// The console's own session ended (why, in words).
  ownSessionEnded(why: string): void;
  /// Events may have been missed (the feed moved past the cursor).
  gap(): void;
  /// The feed could not be read, or reads again (null).
  trouble(f: Failure | null): void;
}

interface Burst {
  key: string;
  n: number;
  users: Set<string>;
  last: number;
  line: HTMLElement;
  text: Text;
}

export class Feed {
  private cursor = "";
  private pending: Revocation[] = [];
  private timer: number | undefined;
  private abort = new AbortController();
  private burst: Burst | null = null;
  private lastFlush = -Infinity;

  constructor(
    private readonly log: HTMLElement,
    private readonly org: string,
    private readonly ownSessionId: number,
    private readonly hooks: FeedHooks,
  ) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.abort.abort();
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = [];
  }

  private async run(): Promise<void> {
    let backoff = 500;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        const stream = api.watchRevocations(
          { org: this.org, afterCursor: this.cursor, heartbeatMs: HEARTBEAT_MS },
          // Headers back: the stream is open, even before its first event.
          { signal, onHeader: () => this.hooks.trouble(null) },
        );
        let slice = performance.now();
        for await (const msg of stream) {
          // Messages already read may still come after stop().
          if (signal.aborted) return;
          // A burst arrives as thousands of messages in a few reads, decoded
          // without a pause: give the page its turn every SLICE_MS of it.
          if (performance.now() - slice > SLICE_MS) {
            await yieldToPage();
            slice = performance.now();
          }
          backoff = 500;
          if (msg.revocation) {
            this.cursor = msg.revocation.cursor || this.cursor;
            this.take(msg.revocation);
          } else if (msg.heartbeat) {
            this.cursor = msg.heartbeat.cursor || this.cursor;
          }
        }
      } catch (err) {
        if (signal.aborted) return;
        const f = failure(err);
        if (f.code === Code.Unauthenticated) {
          this.hooks.ownSessionEnded("Your session has ended.");
          return;
        }
        if (f.reason === "CURSOR_EXPIRED") {
          // Resume from now, and say the table may be stale.
          this.cursor = "";
          this.line("Some endings were missed while disconnected; the table was reloaded.");
          this.hooks.gap();
          continue;
        }
        this.hooks.trouble(f);
        const wait = Math.max(f.retryAfterMs, backoff);
        backoff = Math.min(backoff * 2, 10_000);
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  private take(rev: Revocation): void {
    if (rev.sessionId === this.ownSessionId) {
      this.flush();
      this.hooks.ownSessionEnded(
        rev.reason === EndReason.EXPIRED
          ? "Your session expired."
          : `Your session was ended elsewhere (${reasonName(rev.reason)}).`,
      );
      return;
    }
    this.pending.push(rev);
    if (this.timer === undefined) {
      // The first ending after a quiet spell is written at once; those that
      // follow it wait for the next flush, at most every FLUSH_MS.
      const wait = Math.max(0, this.lastFlush + FLUSH_MS - performance.now());
      this.timer = window.setTimeout(() => this.flush(), wait);
    }
  }

  private flush(): void {
    this.timer = undefined;
    this.lastFlush = performance.now();
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    const now = Date.now();
    const groups = new Map<string, Revocation[]>();
    for (const rev of batch) {
      const key = `${rev.reason}/${rev.kind}`;
      const g = groups.get(key);
      if (g) g.push(rev);
      else groups.set(key, [rev]);
    }
    for (const [key, revs] of groups) {
      const first = revs[0];
      if (first === undefined) continue;
      const b = this.burst;
      if (b && b.key === key && now - b.last < BURST_GAP_MS) {
        b.n += revs.length;
        for (const r of revs) b.users.add(r.user);
        b.last = now;
        b.text.data = burstText(b, first);
      } else if (revs.length > GROUP_OVER) {
        const burst: Burst = {
          key,
          n: revs.length,
          users: new Set(revs.map((r) => r.user)),
          last: now,
          line: this.line(""),
          text: document.createTextNode(""),
        };
        burst.text.data = burstText(burst, first);
        burst.line.append(burst.text);
        this.burst = burst;
      } else {
        for (const rev of revs) {
          this.line(
            `${rev.user} · ${kindName(rev.kind)} session #${rev.sessionId} · ${reasonName(rev.reason)}`,
          );
        }
      }
    }
    this.hooks.ended(new Set(batch.map((r) => r.sessionId)));
  }

  private line(content: string | Text): HTMLElement {
    const line = el("p", { class: "ending" }, el("time", {}, clock(new Date())), " ", content);
    this.log.append(line);
    while (this.log.childElementCount > MAX_LINES) {
      this.log.firstElementChild?.remove();
    }
    return line;
  }
}

function burstText(b: Burst, rev: Revocation): string {
  const names = [...b.users].slice(0, NAMED_USERS);
  const others = b.users.size - names.length;
  const whose = others > 0 ? `${names.join(", ")} and ${count(others)} more` : names.join(", ");
  return `${count(b.n)} ${kindName(rev.kind)} sessions of ${whose} · ${reasonName(rev.reason)}`;
}
