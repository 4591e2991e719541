// A visitor's session on a shop with @vemetric/web, its hub host set to the endpoint.
// argv[2]: {"host": "http://127.0.0.1:PORT", "token": "...", "site": "https://www.shop.example.com",
//           "user": "vm-user-1"}
import { createRequire } from "node:module";
import { args, finish, note, openPage, settle, sleep } from "./browser.mjs";

const require = createRequire(import.meta.url);
const { host, token, site, user } = args();

const window = openPage({
  url: `${site}/`,
  referrer: "https://news.example.org/article",
  // The wrapper loads the tracker from Vemetric's CDN; here the same script from the package.
  scripts: { "https://cdn.vemetric.com/main.js": require.resolve("@vemetric/web/dist/main.js") },
});
const { vemetric } = require("@vemetric/web");

vemetric.init({ token, host, trackOutboundLinks: true, trackDataAttributes: false });
const script = window.document.getElementById("vmtrc-scr");
await new Promise((resolve, reject) => {
  script.addEventListener("load", resolve);
  script.addEventListener("error", () => reject(new Error("the tracker script did not load")));
});
note({ step: "loaded" }); // init() tracked the first pageview
await settle();

// Two more pages of the shop (pushState, as a single-page app navigates) ...
window.history.pushState({}, "", "/products");
await settle();
window.history.pushState({}, "", "/products/42?color=red");
await settle();
// ... and a hash route on the product page.
window.location.hash = "#reviews";
await settle();

await vemetric.trackEvent("Add To Cart", { eventData: { size: 3, beta: true, color: "red" } });
await vemetric.identify({
  identifier: user,
  displayName: "Vera Visitor",
  data: { set: { plan: "free" }, setOnce: { firstSeenOn: "shop" } },
});
await vemetric.updateUser({ set: { plan: "pro" }, unset: ["trial"], avatarUrl: "https://img.example.org/v.png" });
await settle();

// Beacons: an event sent with `beacon: true`, an outbound link click, the page leave.
await vemetric.trackEvent("Checkout Started", { eventData: { items: 2 }, beacon: true });
await settle();
const link = window.document.createElement("a");
link.href = "https://partner.example.net/offer";
link.textContent = "partner offer";
window.document.body.appendChild(link);
link.addEventListener("click", (event) => event.preventDefault()); // stay on the page
link.click();
await settle();
await sleep(50);
window.dispatchEvent(new window.Event("beforeunload"));
await settle();
await vemetric.resetUser(); // logging out: the hub only forgets the browser's identity
await settle();
finish();
