// A backend reporting a signup with @vemetric/node, its host set to the endpoint.
// The SDK speaks only HTTPS (Node's https module): the endpoint's self-signed
// certificate is trusted through NODE_EXTRA_CA_CERTS.
// argv[2]: {"host": "https://127.0.0.1:PORT", "token": "...", "user": "node-user-1"}
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Vemetric } = require("@vemetric/node");
const { host, token, user } = JSON.parse(process.argv[2]);

// The SDK never throws: it logs failed requests with console.error. Collect them.
const logged = [];
console.error = (...args) => logged.push({ level: "error", text: args.map((a) => JSON.stringify(a) ?? String(a)).join(" ") });

const vemetric = new Vemetric({ token, host });
const signup = {
  userIdentifier: user,
  userDisplayName: "Nora Node",
  eventData: { plan: "pro", seats: 3, trial: false },
  userData: { set: { plan: "pro" }, setOnce: { signupAt: "2026-12-01" }, unset: ["lead"] },
};
await vemetric.trackEvent("Signup Completed", signup);
await vemetric.trackEvent("Signup Completed", signup); // a retry of the same call: a duplicate
await vemetric.updateUser({
  userIdentifier: user,
  userDisplayName: "Nora N.",
  userAvatarUrl: "https://img.example.org/n.png",
  userData: { set: { plan: "team" } },
});
process.stdout.write(JSON.stringify({ requests: [], console: logged, log: [] }) + "\n");
process.exit(0);
