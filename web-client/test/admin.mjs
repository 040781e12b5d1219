#!/usr/bin/env node
// Headless Chromium on the admin page (`GET /`), driven one command at a time, for
// Understudy's end-to-end tests.
//
//   node admin.mjs --url URL [--require-token TOKEN] [--no-websocket | --mock-websocket]
//                  [--width 1280] [--height 800]
//
// Launches Debian's Chromium (/usr/bin/chromium; env CHROMIUM overrides), opens URL, waits for
// `window.understudyAdmin` and prints `{"ready": true}`. Then it reads commands from stdin,
// one JSON object per line, and answers each with one line `{"id", "ok": true, "value"}` or
// `{"id", "ok": false, "error"}`:
//
//   {"id": 1, "cmd": "state"}                      understudyAdmin's state, counts, log, errors
//   {"id": 2, "cmd": "eval", "js": "EXPR"}         the value of a JS expression in the page
//   {"id": 3, "cmd": "wait", "js": "EXPR", "timeout_ms": 10000}
//                                                  until EXPR is truthy; its value
//   {"id": 4, "cmd": "click", "selector": "CSS"}   (also "fill" with "value", "press" with "key")
//   {"id": 5, "cmd": "screenshot", "path": "F.png", "selector": "CSS"?}
//   {"id": 6, "cmd": "requests"}                   the API requests the page made
//                                                  ({method, url, authorization}) and its
//                                                  WebSocket URLs
//   {"id": 7, "cmd": "goto", "url": "URL"}
//   {"id": 9, "cmd": "ws_send", "data": {...}}     (--mock-websocket) a message to the page
//   {"id": 10, "cmd": "ws_close", "code": 1001}    (--mock-websocket) close the page's socket
//   {"id": 11, "cmd": "ws_count"}                  (--mock-websocket) sockets the page opened
//   {"id": 8, "cmd": "quit"}
//
// --require-token TOKEN stands in for the server's operator auth (`--admin-token-file`) in the
// browser: an /api/* request without `Authorization: Bearer TOKEN` gets 401, a WebSocket to
// /api/ws without `access_token=TOKEN` is refused; what passes goes to the real server.
//
// --no-websocket refuses every WebSocket to /api/ws (the page must fall back to polling).
// --mock-websocket answers /api/ws in the driver instead of the server: the test sends the
// messages (ws_send; a `hello` first), the driver adds an empty `levels` every 100 ms (the
// heartbeat) once the hello went; the API requests still go to the server.
//
// It exits on "quit", on EOF of stdin, on SIGTERM/SIGINT. A failure to start prints
// `{"error": "..."}` and exits 1. Chromium's and the page's console output goes to stderr;
// page errors (uncaught exceptions) are also kept and reported by "state" (`pageErrors`).

import { chromium } from "playwright-core";
import readline from "node:readline";

function out(obj) {
  return new Promise((resolve) => process.stdout.write(JSON.stringify(obj) + "\n", resolve));
}

function log(msg) {
  process.stderr.write(`[admin] ${msg}\n`);
}

function firstLine(e) {
  const msg = e && e.message ? e.message : String(e);
  return msg.split("\n")[0];
}

function parseArgs(argv) {
  const opts = { url: null, requireToken: null, noWebsocket: false, mockWebsocket: false, width: 1280, height: 800 };
  const keys = { "--url": "url", "--require-token": "requireToken", "--width": "width", "--height": "height" };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === "--no-websocket" || arg === "--mock-websocket") {
      opts[arg === "--no-websocket" ? "noWebsocket" : "mockWebsocket"] = true;
      continue;
    }
    const key = keys[arg];
    if (!key) throw new Error(`unknown argument ${arg} (usage: --url URL [--require-token T] [--no-websocket | --mock-websocket] [--width W] [--height H])`);
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      value = argv[++i];
    }
    opts[key] = value;
  }
  if (!opts.url) throw new Error("--url is required");
  opts.width = Number(opts.width);
  opts.height = Number(opts.height);
  if (!(opts.width > 0 && opts.height > 0)) throw new Error("--width and --height must be positive");
  return opts;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    await out({ error: e.message });
    process.exit(1);
  }
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  let browser;
  try {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      timeout: 30000,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
      ],
    });
  } catch (e) {
    await out({ error: `cannot launch ${executablePath}: ${firstLine(e)}` });
    process.exit(1);
  }

  const requests = [];
  const sockets = [];
  const pageErrors = [];
  const mocks = [];
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: opts.width, height: opts.height } });
    page = await context.newPage();
    page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => {
      pageErrors.push(firstLine(e));
      log(`page error: ${e.message}`);
    });
    page.on("crash", () => log("page crashed"));
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.pathname.startsWith("/api/") && r.resourceType() !== "websocket") {
        requests.push({ method: r.method(), url: u.pathname + u.search, authorization: r.headers()["authorization"] || null });
        if (requests.length > 2000) requests.shift();
      }
    });
    page.on("websocket", (ws) => {
      sockets.push(ws.url());
      if (sockets.length > 200) sockets.shift();
    });
    if (opts.mockWebsocket) {
      await page.routeWebSocket(
        (u) => u.pathname === "/api/ws",
        (ws) => {
          const mock = { ws, heartbeat: null, open: true };
          mocks.push(mock);
          ws.onMessage(() => {});
          ws.onClose(() => {
            mock.open = false;
            clearInterval(mock.heartbeat);
          });
        },
      );
    } else if (opts.noWebsocket) {
      await page.routeWebSocket(
        (u) => u.pathname === "/api/ws",
        (ws) => ws.close({ code: 1011, reason: "refused by the test driver" }),
      );
    } else if (opts.requireToken) {
      await page.routeWebSocket(
        (u) => u.pathname === "/api/ws",
        (ws) => {
          if (new URL(ws.url()).searchParams.get("access_token") === opts.requireToken) {
            ws.connectToServer();
          } else {
            ws.close({ code: 1008, reason: "unauthorized" });
          }
        },
      );
    }
    if (opts.requireToken) {
      const want = `Bearer ${opts.requireToken}`;
      await page.route(
        (u) => u.pathname.startsWith("/api/"),
        (route) => {
          if (route.request().headers()["authorization"] === want) return route.continue();
          return route.fulfill({ status: 401, contentType: "application/json", body: JSON.stringify({ error: "unauthorized" }) });
        },
      );
    }
    const resp = await page.goto(opts.url, { waitUntil: "load", timeout: 15000 });
    if (!resp) throw new Error(`no response for ${opts.url}`);
    if (!resp.ok()) throw new Error(`GET ${opts.url}: HTTP ${resp.status()}`);
    await page.waitForFunction(() => !!window.understudyAdmin, null, { timeout: 10000 }).catch(() => {
      throw new Error("the page has no window.understudyAdmin");
    });
  } catch (e) {
    await out({ error: firstLine(e) });
    await browser.close().catch(() => {});
    process.exit(1);
  }
  await out({ ready: true });

  const commands = {
    state: () =>
      page.evaluate(() => {
        const a = window.understudyAdmin;
        const s = a.state;
        return {
          connection: s.connection,
          via: s.via,
          authRequired: s.authRequired,
          signedIn: s.signedIn,
          sockets: s.sockets,
          hellos: s.hellos,
          lastMessageAt: s.lastMessageAt,
          rooms: s.rooms,
          status: s.status,
          counts: a.counts,
          log: a.log.slice(0, 100),
          lastError: a.lastError,
          errors: a.errors,
        };
      }).then((v) => ({ ...v, pageErrors })),
    eval: (c) => page.evaluate(`(${c.js})`),
    // Polled from here: the page's CSP forbids the eval that waitForFunction's in-page
    // polling needs (and that CSP is part of what is tested).
    wait: async (c) => {
      const end = Date.now() + (c.timeout_ms || 10000);
      let last;
      for (;;) {
        last = await page.evaluate(`(${c.js})`);
        if (last) return last;
        if (Date.now() >= end) throw new Error(`wait: ${c.js} still ${JSON.stringify(last)} after ${c.timeout_ms || 10000} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    click: (c) => page.click(c.selector, { timeout: c.timeout_ms || 5000 }).then(() => null),
    fill: (c) => page.fill(c.selector, String(c.value), { timeout: c.timeout_ms || 5000 }).then(() => null),
    press: (c) => page.press(c.selector, c.key, { timeout: c.timeout_ms || 5000 }).then(() => null),
    screenshot: async (c) => {
      if (c.selector) await page.locator(c.selector).first().screenshot({ path: c.path, timeout: 5000 });
      else await page.screenshot({ path: c.path, fullPage: false });
      return c.path;
    },
    requests: async () => ({ requests, sockets }),
    ws_send: async (c) => {
      const m = mocks[mocks.length - 1];
      if (!m || !m.open) throw new Error("the page has no mocked socket open");
      m.ws.send(JSON.stringify(c.data));
      if (c.data && c.data.type === "hello" && !m.heartbeat) {
        m.heartbeat = setInterval(() => m.open && m.ws.send(JSON.stringify({ type: "levels", rooms: {} })), 100);
      }
      return mocks.length;
    },
    ws_close: async (c) => {
      const m = mocks[mocks.length - 1];
      if (!m || !m.open) throw new Error("the page has no mocked socket open");
      m.open = false;
      clearInterval(m.heartbeat);
      await m.ws.close({ code: c.code || 1001, reason: c.reason || "" });
      return mocks.length;
    },
    ws_count: async () => ({ opened: mocks.length, open: mocks.filter((m) => m.open).length }),
    goto: (c) => page.goto(c.url, { waitUntil: "load", timeout: 15000 }).then((r) => (r ? r.status() : null)),
  };

  let quitting = false;
  const quit = async (why) => {
    if (quitting) return;
    quitting = true;
    if (why) log(`stopping: ${why}`);
    await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 5000))]).catch(() => {});
    process.exit(0);
  };
  process.once("SIGTERM", () => quit("SIGTERM"));
  process.once("SIGINT", () => quit("SIGINT"));

  const rl = readline.createInterface({ input: process.stdin });
  // One command at a time, in order.
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    chain = chain.then(async () => {
      if (!line.trim()) return;
      let c;
      try {
        c = JSON.parse(line);
      } catch {
        await out({ id: null, ok: false, error: "not JSON" });
        return;
      }
      if (c.cmd === "quit") {
        await out({ id: c.id, ok: true, value: null });
        return quit(null);
      }
      const f = commands[c.cmd];
      if (!f) {
        await out({ id: c.id, ok: false, error: `unknown command ${c.cmd}` });
        return;
      }
      try {
        const value = await f(c);
        await out({ id: c.id, ok: true, value: value === undefined ? null : value });
      } catch (e) {
        await out({ id: c.id, ok: false, error: firstLine(e) });
      }
    });
  });
  rl.on("close", () => chain.then(() => quit("stdin EOF")));
}

main().catch(async (e) => {
  await out({ error: firstLine(e) });
  process.exit(1);
});
