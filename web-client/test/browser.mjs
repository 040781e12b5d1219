#!/usr/bin/env node
// Headless Chromium as a WebRTC participant, for Understudy's end-to-end tests.
//
//   node browser.mjs --url URL --wav FILE --seconds N [--name NAME] [--screenshot PNG]
//                    [--video 1]
//
// Launches Debian's Chromium (/usr/bin/chromium; env CHROMIUM overrides) with a fake
// microphone that plays FILE (looped by Chromium) and a fake camera (Chromium's 640x480
// test pattern; used only with `--video 1`: otherwise the page is opened with `video=0` and
// joins with audio alone), opens URL (normally
// `http://HOST/room/R?autojoin=1&name=N`: the page joins over WHIP by itself) and prints, every
// 250 ms, ONE JSON line on stdout:
//
//   {"t": ms since start, "stats": window.understudy.stats(), "events": [events since the last line]}
//
// It stops after N seconds, on SIGTERM/SIGINT, or when stdin reaches EOF (only when stdin is
// a pipe or a socket: a test that holds the pipe open keeps the browser in the room; /dev/null
// or a terminal is not watched). Then it calls understudy.leave() (the page DELETEs its WHIP
// resource), prints `{"t":..,"done":true,"stats":{final stats},"events":[every event]}` and exits 0.
//
// Errors print `{"error": "..."}` and exit 1: the browser or page cannot start, the page has
// no `window.understudy`, or the page records an "error" event (e.g. the WHIP POST is
// refused: the line then also carries "events": every event so far).
// Chromium's and the page's console output goes to stderr.

import { chromium } from "playwright-core";
import fs from "node:fs";

const TICK_MS = 250;
const t0 = Date.now();
const now = () => Date.now() - t0;

function out(obj) {
  return new Promise((resolve) => process.stdout.write(JSON.stringify(obj) + "\n", resolve));
}

function log(msg) {
  process.stderr.write(`[browser] ${msg}\n`);
}

function parseArgs(argv) {
  const opts = { url: null, wav: null, seconds: null, name: null, screenshot: null, video: null };
  const keys = {
    "--url": "url",
    "--wav": "wav",
    "--seconds": "seconds",
    "--name": "name",
    "--screenshot": "screenshot",
    "--video": "video",
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const key = keys[arg];
    if (!key) throw new Error(`unknown argument ${arg} (usage: --url URL --wav FILE --seconds N [--name NAME] [--screenshot PNG])`);
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      value = argv[++i];
    }
    opts[key] = value;
  }
  if (!opts.url) throw new Error("--url is required");
  if (!opts.wav) throw new Error("--wav is required");
  if (opts.seconds === null) throw new Error("--seconds is required");
  const seconds = Number(opts.seconds);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error(`--seconds must be a positive number, not ${opts.seconds}`);
  opts.seconds = seconds;
  if (!fs.existsSync(opts.wav)) throw new Error(`--wav ${opts.wav}: no such file`);
  opts.wav = fs.realpathSync(opts.wav);
  {
    const u = new URL(opts.url);
    if (opts.video !== "1" && !u.searchParams.has("video")) u.searchParams.set("video", "0");
    opts.url = u.href;
  }
  if (opts.name !== null) {
    // --name sets ?name= on the page's URL (and autojoin=1 unless the URL says otherwise).
    const u = new URL(opts.url);
    u.searchParams.set("name", opts.name);
    if (!u.searchParams.has("autojoin")) u.searchParams.set("autojoin", "1");
    opts.url = u.href;
  }
  return opts;
}

/** Resolves when asked to stop: SIGTERM, SIGINT, or EOF on a piped stdin. */
function stopSignal() {
  let stop;
  const p = new Promise((resolve) => (stop = resolve));
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
  let st = null;
  try {
    st = fs.fstatSync(0);
  } catch {
    /* no stdin */
  }
  if (st && (st.isFIFO() || st.isSocket())) {
    process.stdin.on("data", () => {});
    process.stdin.on("end", () => stop("stdin EOF"));
    process.stdin.on("error", () => stop("stdin error"));
  }
  return p;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    await out({ error: e.message });
    process.exit(1);
  }
  const stopped = stopSignal();
  let stopReason = null;
  stopped.then((why) => (stopReason = why));

  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  const args = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${opts.wav}`,
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    // getUserMedia needs a secure context: the test bed serves plain HTTP on a private
    // address, so that one origin counts as secure (a deployment serves HTTPS).
    `--unsafely-treat-insecure-origin-as-secure=${new URL(opts.url).origin}`,
  ];

  let browser = null;
  let exitCode = 0;
  try {
    // Signals are ours: playwright would close the browser before leave() could run.
    browser = await chromium.launch({
      executablePath,
      args,
      headless: true,
      timeout: 30000,
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
  } catch (e) {
    await out({ error: `cannot launch ${executablePath}: ${firstLine(e)}` });
    process.exit(1);
  }
  const failWith = async (error, extra = {}) => {
    await out({ error, ...extra });
    exitCode = 1;
  };

  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log(`page error: ${e.message}`));
    page.on("crash", () => log("page crashed"));
    const resp = await page.goto(opts.url, { waitUntil: "load", timeout: 15000 });
    if (!resp) throw new Error(`no response for ${opts.url}`);
    if (!resp.ok()) throw new Error(`GET ${opts.url}: HTTP ${resp.status()}`);
    await page.waitForFunction(() => !!window.understudy, null, { timeout: 10000 }).catch(() => {
      throw new Error("the page has no window.understudy");
    });

    const read = (since) =>
      page.evaluate(async (since) => {
        const u = window.understudy;
        return { stats: await u.stats(), events: u.events.slice(since), total: u.events.length, state: u.state };
      }, since);

    let seen = 0;
    let stats = null;
    const deadline = opts.seconds * 1000;
    let fatal = null;
    while (stopReason === null && now() < deadline) {
      const next = now() + TICK_MS;
      const r = await withTimeout(read(seen), 5000, "page");
      seen = r.total;
      stats = r.stats;
      await out({ t: now(), stats: r.stats, events: r.events });
      fatal = r.events.find((e) => e.type === "error");
      if (fatal) break;
      await Promise.race([sleep(Math.max(0, next - now())), stopped]);
    }
    if (opts.screenshot) {
      await page.screenshot({ path: opts.screenshot, fullPage: true }).catch((e) => log(`screenshot: ${firstLine(e)}`));
    }
    // Leave (DELETE), then the final line with every event.
    const final = await withTimeout(
      page.evaluate(async () => {
        const u = window.understudy;
        await u.leave();
        return { stats: await u.stats(), events: u.events };
      }),
      5000,
      "leave()",
    ).catch(async (e) => ({ stats, events: null, leaveError: firstLine(e) }));
    if (final.leaveError) log(final.leaveError);
    if (fatal) {
      await failWith(String(fatal.value), { t: now(), stats: final.stats, events: final.events });
    } else {
      if (stopReason) log(`stopping: ${stopReason}`);
      await out({ t: now(), done: true, stats: final.stats, events: final.events });
    }
  } catch (e) {
    await failWith(firstLine(e));
  } finally {
    await withTimeout(browser.close(), 5000, "browser.close()").catch((e) => log(firstLine(e)));
  }
  process.exit(exitCode);
}

function firstLine(e) {
  const msg = e && e.message ? e.message : String(e);
  return msg.split("\n")[0];
}

main().catch(async (e) => {
  await out({ error: firstLine(e) });
  process.exit(1);
});
