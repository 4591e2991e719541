// A reader's visit to a documentation site with plausible-tracker (hash mode), its
// apiHost set to the endpoint. The tracker predates revenue and engagement events.
// argv[2]: {"apiHost": "http://127.0.0.1:PORT", "site": "https://docs.example.com"}
import { createRequire } from "node:module";
import { args, finish, openPage, settle } from "./browser.mjs";

const require = createRequire(import.meta.url);
const { apiHost, site } = args();

const window = openPage({ url: `${site}/docs/intro`, referrer: "https://search.example.org/?q=eventsieve" });
const Plausible = require("plausible-tracker").default;

const { enableAutoPageviews, trackEvent } = Plausible({
  domain: new URL(site).hostname,
  apiHost,
  hashMode: true,
});
enableAutoPageviews(); // the first pageview
await settle();
window.history.pushState({}, "", "/docs/install");
await settle();
window.history.pushState({}, "", "/docs/configure");
await settle();
window.location.hash = "#/options"; // a hash route
await settle();
// The tracker's props may be strings, numbers or booleans (it JSON-encodes them).
trackEvent("Signup", { props: { method: "HTTP", size: 3, beta: true } });
await settle();
finish();
