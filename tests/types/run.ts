// Runs the typed API program against the relay whose URL is the first argument.
import { main } from "./api.js";

const url = process.argv[2];
if (!url) throw new Error("usage: node build/run.js ws://HOST:PORT");
console.log(JSON.stringify(await main(url)));
