// A shopper's visit with @plausible-analytics/tracker (the npm package of Plausible's
// script), its endpoint set to eventsieve's /api/event.
// argv[2]: {"endpoint": "http://127.0.0.1:PORT/api/event", "site": "https://store.example.com",
//           "mode": "history" | "hash"}
// history: three pages by pushState, a custom event with number and boolean props,
//          two purchases with revenue, an outbound link click, then the tab is hidden (engagement of every page);
// hash:    three hash routes (hashBasedRouting), then the tab is hidden.
import { args, finish, openPage, settle, sleep } from "./browser.mjs";

const { endpoint, site, mode } = args();
const hash = mode === "hash";
const window = openPage({
  url: hash ? `${site}/#/` : `${site}/`,
  referrer: "https://social.example.org/post/1",
});
const { document } = window;

// jsdom has no layout: give the page the sizes of a long page in a 768 px window,
// so the tracker's scroll depth is a real figure.
for (const element of [document.documentElement, document.body]) {
  for (const name of ["scrollHeight", "offsetHeight", "clientHeight"]) {
    Object.defineProperty(element, name, { configurable: true, get: () => 3072 });
  }
}
let scrollY = 0;
Object.defineProperty(window, "innerHeight", { configurable: true, get: () => 768 });
Object.defineProperty(window, "scrollY", { configurable: true, get: () => scrollY });
function scrollTo(y) {
  scrollY = y;
  document.dispatchEvent(new window.Event("scroll"));
}
let visibility = "visible";
Object.defineProperty(document, "visibilityState", { configurable: true, get: () => visibility });

const statuses = [];
const callback = (result) => statuses.push(result);
const { init, track } = await import("@plausible-analytics/tracker");
init({ domain: new URL(site).hostname, endpoint, hashBasedRouting: hash, outboundLinks: true }); // the first pageview
await settle();

async function navigate(to) {
  await sleep(200); // time on the page: the engagement's `e`
  scrollTo(1536); // read half the page (2304 of 3072 px seen: 75 %)
  await sleep(50);
  if (hash) window.location.hash = to;
  else window.history.pushState({}, "", to);
  scrollY = 0;
  await settle();
}

if (hash) {
  await navigate("#/settings");
  await navigate("#/settings/profile");
} else {
  await navigate("/products");
  await navigate("/products/42");
  track("Add to Cart", { props: { size: 3, beta: true, color: "red" }, callback });
  await settle();
  track("Purchase", { props: { items: "2" }, revenue: { amount: "9.99", currency: "USD" }, callback });
  await settle();
  // The same purchase again, for another amount (a number this time): not a duplicate.
  track("Purchase", { props: { items: "2" }, revenue: { amount: 19.99, currency: "EUR" }, callback });
  await settle();
  // A click on a link to another site: the tracker's own "Outbound Link: Click".
  const link = document.createElement("a");
  link.href = "https://partner.example.net/offer?ref=store";
  document.body.appendChild(link);
  link.addEventListener("click", (event) => event.preventDefault()); // jsdom cannot navigate
  link.click();
  await settle();
}
await sleep(100);
visibility = "hidden"; // the visitor leaves the tab: engagement of the last page
document.dispatchEvent(new window.Event("visibilitychange"));
await settle();
if (statuses.some((s) => !s || s.status !== 202)) throw new Error(`answers: ${JSON.stringify(statuses)}`);
finish();
