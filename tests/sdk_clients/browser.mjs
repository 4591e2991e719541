// A browser page in Node for the official browser trackers: jsdom's DOM, its
// XMLHttpRequest (real HTTP, with the browser's CORS rules: Origin header,
// preflights, credentials), and what jsdom lacks built on that same XHR:
// `fetch` and `navigator.sendBeacon`. Nothing is answered locally: every
// request a tracker makes reaches the endpoint.
//
// The page's globals are also set on Node's global object, because the
// trackers' npm modules run in Node's context and refer to `window`,
// `document`, `location`, ... as free names.

import { readFileSync } from "node:fs";
import { JSDOM, ResourceLoader, VirtualConsole } from "jsdom";

// The user agent of a current desktop Chrome: the endpoint's bot rules must see a browser.
export const CHROME_UA =
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " +
  "Chrome/131.0.0.0 Safari/537.36";

// Scripts a page loads by URL, served from installed packages (no CDN here).
class PackagedScripts extends ResourceLoader {
  constructor(scripts, userAgent) {
    super({ userAgent });
    this.scripts = scripts;
  }

  fetch(url, options) {
    const file = this.scripts[url];
    if (file === undefined) {
      log({ event: "resource refused", url });
      return null;
    }
    return Promise.resolve(readFileSync(file));
  }
}

const results = { requests: [], console: [], log: [] };

// The npm modules log through Node's console (e.g. "Ignoring event ... running
// locally"): collected with the page's own console, so the tests see them.
for (const level of ["warn", "error"]) {
  console[level] = (...args) => results.console.push({ level, text: args.map(String).join(" ") });
}

function log(entry) {
  results.log.push(entry);
}

/** Open `url` in a fresh page; returns the jsdom window. */
export function openPage({ url, referrer, userAgent = CHROME_UA, scripts = {} }) {
  const virtualConsole = new VirtualConsole();
  for (const level of ["log", "info", "warn", "error"]) {
    virtualConsole.on(level, (...args) => results.console.push({ level, text: args.join(" ") }));
  }
  virtualConsole.on("jsdomError", (error) =>
    results.console.push({ level: "jsdomError", text: String(error.stack || error) }),
  );
  const dom = new JSDOM("<!doctype html><html><head></head><body><main></main></body></html>", {
    url,
    referrer,
    pretendToBeVisual: true,
    runScripts: "dangerously",
    resources: new PackagedScripts(scripts, userAgent),
    virtualConsole,
  });
  const { window } = dom;
  instrumentXhr(window);
  window.fetch = fetchOver(window);
  window.navigator.sendBeacon = sendBeaconOver(window);
  // jsdom has no layout: nothing ever resizes, so an observer that never fires is exact.
  window.ResizeObserver ??= class {
    observe() {}
    unobserve() {}
    disconnect() {}
  };
  for (const name of [
    "window",
    "document",
    "location",
    "history",
    "navigator",
    "localStorage",
    "sessionStorage",
    "XMLHttpRequest",
    "MutationObserver",
    "ResizeObserver",
    "HTMLAnchorElement",
    "Element",
    "Blob",
    "fetch",
    "addEventListener",
    "removeEventListener",
  ]) {
    const value = window[name];
    Object.defineProperty(globalThis, name, {
      value: typeof value === "function" && /^[a-z]/.test(name) ? value.bind(window) : value,
      configurable: true,
      writable: true,
    });
  }
  return window;
}

// Every XHR the page sends is counted until it ends, and its outcome recorded.
let inFlight = 0;

function instrumentXhr(window) {
  const proto = window.XMLHttpRequest.prototype;
  const open = proto.open;
  const send = proto.send;
  proto.open = function (method, url, ...rest) {
    this._request = { method, url };
    return open.call(this, method, url, ...rest);
  };
  proto.send = function (body) {
    inFlight += 1;
    const request = { ...this._request, body: typeof body === "string" ? body : undefined };
    if (body instanceof window.Blob) request.blob = body.type;
    this.addEventListener("loadend", () => {
      inFlight -= 1;
      results.requests.push({ ...request, status: this.status, response: this.responseText });
    });
    return send.call(this, body);
  };
}

function fetchOver(window) {
  // fetch() as a browser runs it for these trackers: the same CORS rules as XHR
  // (credentials only for `credentials: "include"`), the real network.
  return (url, init = {}) =>
    new Promise((resolve, reject) => {
      const xhr = new window.XMLHttpRequest();
      xhr.open(init.method || "GET", String(url), true);
      xhr.withCredentials = init.credentials === "include";
      for (const [key, value] of Object.entries(init.headers || {})) {
        xhr.setRequestHeader(key, value);
      }
      xhr.onload = () =>
        resolve({
          status: xhr.status,
          ok: xhr.status >= 200 && xhr.status < 300,
          text: async () => xhr.responseText,
        });
      xhr.onerror = () => reject(new TypeError("Failed to fetch"));
      xhr.send(init.body);
    });
}

function sendBeaconOver(window) {
  // navigator.sendBeacon: a POST with credentials, the body's type as Content-Type
  // (application/json is not CORS-safelisted, so the browser preflights it).
  return (url, data) => {
    const xhr = new window.XMLHttpRequest();
    xhr.open("POST", String(url), true);
    xhr.withCredentials = true;
    // A Blob's type is the request's Content-Type; one that is not CORS-safelisted
    // (application/json) makes a browser preflight the beacon. jsdom deems every
    // Content-Type safelisted, so the preflight is forced as the XHR spec allows:
    // an upload listener.
    if (data instanceof window.Blob && data.type) {
      xhr.setRequestHeader("Content-Type", data.type);
      if (!/^(text\/plain|application\/x-www-form-urlencoded|multipart\/form-data)\b/.test(data.type)) {
        xhr.upload.addEventListener("progress", () => {});
      }
    }
    xhr.send(data);
    return true;
  };
}

/** Resolve once no request has been in flight for `quietMs`. */
export async function settle(quietMs = 300, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let quietSince = Date.now();
  while (Date.now() < deadline) {
    await sleep(25);
    if (inFlight > 0) quietSince = Date.now();
    else if (Date.now() - quietSince >= quietMs) return;
  }
  throw new Error(`requests still in flight after ${timeoutMs} ms`);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function note(entry) {
  log(entry);
}

/** Print what happened as one JSON document (read by the pytest side) and exit. */
export function finish() {
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exit(0);
}

/** The driver's arguments: one JSON object in argv[2]. */
export function args() {
  return JSON.parse(process.argv[2] || "{}");
}

process.on("unhandledRejection", (error) => {
  results.console.push({ level: "unhandledRejection", text: String(error && (error.stack || JSON.stringify(error))) });
});
